import numpy as np
import pytest

pytest.importorskip("matplotlib")

from pada_fast.evaluate.plots import distribution_plot, scatter_plot  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_scatter_and_distribution_write_png(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.uniform(10, 94, 300)
    pred = true + rng.normal(0, 10, 300)
    path = scatter_plot(pred, true, tmp_path / "sub" / "scatter.png", title="test")
    assert path.endswith("scatter.png") and open(path, "rb").read(8) == PNG_MAGIC
    path = distribution_plot({"all": true, "subset": true[:50]}, tmp_path / "dist.png")
    assert open(path, "rb").read(8) == PNG_MAGIC
    with pytest.raises(ValueError, match="at least one"):
        distribution_plot({}, tmp_path / "none.png")
