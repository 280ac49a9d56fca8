import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PADA_FAST_SHARED", REPO.parent / "shared"))

# Keep test runs predictable on small machines; benchmarks set their own thread counts.
torch.set_num_threads(min(2, torch.get_num_threads()))

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs an NVIDIA GPU"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
