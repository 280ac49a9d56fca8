"""The fused per-operation gradient-norm accumulation against its reference and opcheck."""
import pytest
import torch

from pada_fast import ops
from pada_fast.ops import reference

needs_library = pytest.mark.skipif(not ops.COMPILED, reason=f"compiled library not loaded: {ops.STATUS.reason}")


def random_path(device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 16, 3, 3), (16,), (300, 301), (7,), (3, 5), (1,), (70000,), (2, 3, 4)]
    grads = [torch.randn(*s, generator=g).to(device=device, dtype=dtype) for s in shapes]
    slots = [3, 3, 0, 11, 3, 7, 0, 14]  # several tensors per slot, unsorted, one > 64K elements
    return grads, slots


def accumulators(device, layers=3, candidates=5):
    return torch.zeros(layers, candidates, device=device), torch.zeros(layers, candidates, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_matches_reference(device, dtype):
    grads, slots = random_path(device, dtype)
    a_sum, a_cnt = accumulators(device)
    b_sum, b_cnt = accumulators(device)
    for step in range(3):
        ops.grad_norm_accumulate_(grads, slots, a_sum, a_cnt)
        reference.grad_norm_accumulate_(grads, slots, b_sum, b_cnt)
    torch.testing.assert_close(a_cnt, b_cnt)
    torch.testing.assert_close(a_sum, b_sum, rtol=1e-5, atol=1e-5)
    assert a_cnt.view(-1)[[0, 3, 7, 11, 14]].eq(3).all() and a_cnt.sum() == 15


def test_hand_computed_norms(device):
    grads = [torch.tensor([3.0, 0.0], device=device), torch.tensor([4.0], device=device),
             torch.tensor([[1.0, 2.0], [2.0, 4.0]], device=device)]
    norm_sum, count = torch.zeros(2, 3, device=device), torch.zeros(2, 3, device=device)
    ops.grad_norm_accumulate_(grads, [4, 4, 0], norm_sum, count)
    ops.grad_norm_accumulate_(grads[2:], [4], norm_sum, count)
    assert norm_sum.view(-1)[4].item() == pytest.approx(5.0 + 5.0)
    assert norm_sum.view(-1)[0].item() == pytest.approx(5.0)
    assert count.view(-1).tolist() == [1, 0, 0, 0, 2, 0]
    mean = ops.grad_norm_finalize(norm_sum, count)
    assert mean.view(-1).tolist() == pytest.approx([5.0, 0, 0, 0, 5.0, 0])


def test_missing_gradients_count_the_slot(device):
    norm_sum, count = accumulators(device)
    ops.grad_norm_accumulate_([None, torch.ones(4, device=device)], [2, 2], norm_sum, count)
    ops.grad_norm_accumulate_([None], [6], norm_sum, count)
    assert norm_sum.view(-1)[2].item() == pytest.approx(2.0)
    assert count.view(-1)[[2, 6]].tolist() == [1.0, 1.0]
    assert norm_sum.view(-1)[6].item() == 0.0


def test_non_contiguous_and_empty(device):
    base = torch.randn(40, 50, device=device)
    norm_sum, count = accumulators(device)
    ops.grad_norm_accumulate_([base.t()[::3]], [1], norm_sum, count)
    assert norm_sum.view(-1)[1].item() == pytest.approx(base.t()[::3].norm().item(), rel=1e-5)
    ops.grad_norm_accumulate_([], [], norm_sum, count)
    assert count.sum() == 1


def test_channels_last_and_transposed_dense_gradients(device):
    """Dense tensors in another memory format (a channels-last conv gradient, a transposed matrix)
    are read in place and give the same norm as their contiguous copy."""
    g = torch.Generator().manual_seed(3)
    conv = torch.randn(16, 8, 3, 3, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    mat = torch.randn(70, 1000, generator=g).to(device).t()      # dense, not contiguous, > 64K elements
    assert not conv.is_contiguous() and not mat.is_contiguous()
    a_sum, a_cnt = accumulators(device)
    b_sum, b_cnt = accumulators(device)
    ops.grad_norm_accumulate_([conv, mat], [1, 2], a_sum, a_cnt)
    ops.grad_norm_accumulate_([conv.contiguous(), mat.contiguous()], [1, 2], b_sum, b_cnt)
    torch.testing.assert_close(a_sum, b_sum, rtol=1e-5, atol=0.0)
    assert a_sum.view(-1)[1].item() == pytest.approx(conv.double().norm().item(), rel=1e-5)
    assert torch.equal(a_cnt, b_cnt)


def test_bad_arguments(device):
    norm_sum, count = accumulators(device)
    g = [torch.ones(3, device=device)]
    with pytest.raises(ValueError, match="slot 15 is outside the accumulator of 15 entries"):
        ops.grad_norm_accumulate_(g, [15], norm_sum, count)
    with pytest.raises(ValueError, match="same length"):
        ops.grad_norm_accumulate_(g, [1, 2], norm_sum, count)
    with pytest.raises(TypeError, match="float32"):
        ops.grad_norm_accumulate_(g, [1], norm_sum.double(), count)
    assert norm_sum.sum() == 0 and count.sum() == 0  # rejected calls change nothing


def test_deterministic_across_thread_counts():
    grads, slots = random_path("cpu")
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            norm_sum, count = accumulators("cpu")
            ops.grad_norm_accumulate_(grads, slots, norm_sum, count)
            results.append(norm_sum)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


@needs_library
def test_opcheck(device):
    grads, slots = random_path(device)
    norm_sum, count = accumulators(device)
    torch.library.opcheck(torch.ops.pada_fast.grad_norm_accumulate_.default, (grads, slots, norm_sum, count))


@needs_library
def test_torch_compile_fullgraph():
    grads, slots = random_path("cpu")
    norm_sum, count = accumulators("cpu")
    ref_sum, ref_count = accumulators("cpu")

    @torch.compile(fullgraph=True, backend="aot_eager")
    def record(gs, s, c):
        torch.ops.pada_fast.grad_norm_accumulate_(gs, slots, s, c)

    record(grads, norm_sum, count)
    reference.grad_norm_accumulate_(grads, slots, ref_sum, ref_count)
    torch.testing.assert_close(norm_sum, ref_sum)
    torch.testing.assert_close(count, ref_count)
