"""The fused loss+importance op against its reference, PyTorch, gradcheck and opcheck."""
import pytest
import torch
import torch.nn.functional as F

from pada_fast import ops
from pada_fast.ops import reference

needs_library = pytest.mark.skipif(not ops.COMPILED, reason=f"compiled library not loaded: {ops.STATUS.reason}")


def inputs(batch, classes, device, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale)
    target = torch.randint(0, classes, (batch,), generator=g)
    return logits.to(device=device, dtype=dtype), target.to(device)


def test_library_loaded_with_cpu_kernels():
    assert ops.COMPILED, ops.STATUS.reason
    assert ops.STATUS.has_kernel("cpu")


@pytest.mark.parametrize("classes", [1, 10, 37, 1000, 1003])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_forward_matches_reference_and_torch(device, classes, smoothing):
    logits, target = inputs(64, classes, device, torch.float64)
    loss, importance = ops.cross_entropy_with_importance(logits, target, smoothing)
    ref_loss, ref_imp, _ = reference.cross_entropy_with_importance(logits, target, smoothing)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(importance, ref_imp, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, reduction="none",
                                                     label_smoothing=smoothing), rtol=1e-12, atol=1e-12)
    loss32, imp32 = ops.cross_entropy_with_importance(logits.float(), target, smoothing)
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(imp32.double(), ref_imp, rtol=1e-5, atol=1e-6)


def test_importance_is_softmax_minus_onehot_norm(device):
    logits, target = inputs(32, 10, device, torch.float64)
    _, importance = ops.cross_entropy_with_importance(logits, target)
    expected = (torch.softmax(logits, 1) - F.one_hot(target, 10)).norm(dim=1)
    torch.testing.assert_close(importance, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("classes", [10, 1000])
def test_low_precision_within_twice_reference_error(device, dtype, classes):
    logits, target = inputs(256, classes, device, dtype)
    exact = reference.cross_entropy_with_importance(logits.double(), target, 0.1)
    ref = reference.cross_entropy_with_importance(logits, target, 0.1)
    ours = ops.cross_entropy_with_importance(logits, target, 0.1)
    for k in range(2):
        ref_err = (ref[k].double() - exact[k]).abs().max().item()
        our_err = (ours[k].double() - exact[k]).abs().max().item()
        # Inputs are already rounded to `dtype`, so both compute in float32 from the same values;
        # allow a float32-rounding floor.
        assert our_err <= 2 * ref_err + 1e-5, (k, our_err, ref_err)
    grad_out = torch.rand(256, device=device)
    leaf = logits.clone().requires_grad_(True)
    ops.cross_entropy_with_importance(leaf, target, 0.1)[0].backward(grad_out)
    assert leaf.grad.dtype == dtype
    exact_grad = reference.cross_entropy_with_importance_backward(grad_out.double(), logits.double(), target,
                                                                  exact[2], 0.1)
    ref_grad = reference.cross_entropy_with_importance_backward(grad_out, logits, target, ref[2], 0.1)
    ref_err = (ref_grad.double() - exact_grad).abs().max().item()
    our_err = (leaf.grad.double() - exact_grad).abs().max().item()
    assert our_err <= 2 * ref_err + 1e-6


def test_backward_matches_torch(device):
    logits, target = inputs(128, 100, device)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    weights = torch.rand(128, device=device)
    (ops.cross_entropy_with_importance(a, target, 0.1)[0] * weights).sum().backward()
    (F.cross_entropy(b, target, reduction="none", label_smoothing=0.1) * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_importance_carries_no_gradient(device):
    logits, target = inputs(8, 10, device)
    leaf = logits.clone().requires_grad_(True)
    loss, importance = ops.cross_entropy_with_importance(leaf, target)
    assert loss.requires_grad and not importance.requires_grad


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradcheck_float64(device, smoothing):
    logits, target = inputs(6, 7, device, torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: ops.cross_entropy_with_importance(z, target, smoothing)[0],
                                    (logits,))


def test_empty_batch(device):
    logits = torch.empty(0, 10, device=device, requires_grad=True)
    target = torch.empty(0, dtype=torch.long, device=device)
    loss, importance = ops.cross_entropy_with_importance(logits, target)
    assert loss.shape == importance.shape == (0,)
    loss.sum().backward()
    assert logits.grad.shape == (0, 10)


def test_non_contiguous_inputs(device):
    base, _ = inputs(20, 64, device, torch.float64)
    logits = base.t()[:, ::2]  # [64, 10], strided in both dimensions
    target = torch.randint(0, 10, (128,), device=device)[::2]
    assert not logits.is_contiguous() and not target.is_contiguous()
    got = ops.cross_entropy_with_importance(logits, target, 0.1)
    want = reference.cross_entropy_with_importance(logits.contiguous(), target.contiguous(), 0.1)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("impl", ["op", "reference"])
def test_bad_inputs_are_rejected_with_clear_errors(impl):
    fn = ops.cross_entropy_with_importance if impl == "op" else reference.cross_entropy_with_importance
    logits = torch.randn(4, 5)
    with pytest.raises(IndexError, match=r"target\[2\] = 5 is not a class index in \[0, 5\)"):
        fn(logits, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(IndexError, match="is not a class index"):
        fn(logits, torch.tensor([0, -1, 1, 2]))
    with pytest.raises(TypeError, match="int64 class indices.*target.long"):
        fn(logits, torch.tensor([0, 1, 2, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="one class index per row"):
        fn(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="2-D"):
        fn(torch.randn(4, 5, 1), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="label_smoothing"):
        fn(logits, torch.tensor([0, 1, 2, 3]), 1.5)


def test_extreme_and_nan_logits():
    target = torch.tensor([0, 1, 2])
    logits = torch.tensor([[1e4, -1e4, 0.0], [5.0, 5.0, 5.0], [-1e4, -1e4, 1e4]])
    loss, importance = ops.cross_entropy_with_importance(logits, target)
    ref_loss, ref_imp, _ = reference.cross_entropy_with_importance(logits.double(), target)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(importance.double(), ref_imp, rtol=1e-6, atol=1e-6)
    nan_loss, nan_imp = ops.cross_entropy_with_importance(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    assert torch.isnan(nan_loss).all() and torch.isnan(nan_imp).all()


@needs_library
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_opcheck(device, dtype):
    logits, target = inputs(16, 10, device, dtype)
    logits.requires_grad_(True)
    torch.library.opcheck(torch.ops.pada_fast.cross_entropy_with_importance.default, (logits, target, 0.1))
    lse = reference.cross_entropy_with_importance(logits.detach(), target, 0.1)[2]
    grad = torch.rand(16, device=device, dtype=lse.dtype)
    torch.library.opcheck(torch.ops.pada_fast.cross_entropy_with_importance_backward.default,
                          (grad, logits.detach(), target, lse, 0.1))


@needs_library
def test_torch_compile_fullgraph():
    logits, target = inputs(32, 10, "cpu")
    leaf = logits.clone().requires_grad_(True)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(z, y):
        loss, importance = ops.cross_entropy_with_importance(z, y, 0.1)
        return loss.mean(), importance

    loss, importance = step(leaf, target)
    loss.backward()
    ref_loss, ref_imp, _ = reference.cross_entropy_with_importance(logits, target, 0.1)
    torch.testing.assert_close(loss, ref_loss.mean())
    torch.testing.assert_close(importance, ref_imp)
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_small_importance_of_a_confident_sample_is_not_cancelled(device):
    # p_y = 1 - 1e-4: ||p - onehot|| ~ 1.4e-4 must survive float32 arithmetic
    logits = torch.tensor([[0.0, 0.0, 9.9 + 0.0]], dtype=torch.float64)
    logits[0, 2] = torch.log(torch.tensor(2 * (1 - 1e-4) / 1e-4, dtype=torch.float64))
    target = torch.tensor([2])
    want = reference.cross_entropy_with_importance(logits, target)[1]
    got = ops.cross_entropy_with_importance(logits.float().to(device), target.to(device))[1]
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-3, atol=0)


@needs_library
def test_fake_kernels_check_their_inputs_like_the_compiled_ops():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        loss, importance, lse = torch.ops.pada_fast.cross_entropy_with_importance(
            torch.empty(4, 3), torch.zeros(4, dtype=torch.long), 0.0)
        assert loss.shape == (4,) and importance.dtype == torch.float32
        with pytest.raises(RuntimeError, match="logits must be 2-D"):
            torch.ops.pada_fast.cross_entropy_with_importance(torch.empty(4, 3, 2), torch.zeros(4, dtype=torch.long), 0.0)
        with pytest.raises(RuntimeError, match="int64 class indices"):
            torch.ops.pada_fast.cross_entropy_with_importance(torch.empty(4, 3), torch.zeros(4, dtype=torch.int32), 0.0)
        with pytest.raises(RuntimeError, match="gradients but"):
            torch.ops.pada_fast.grad_norm_accumulate_([torch.empty(3)], [0, 1], torch.zeros(2, 2), torch.zeros(2, 2))
