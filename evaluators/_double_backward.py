"""Convolution, batch norm, ReLU and pooling with a cheap double backward: GraSP's Hessian pass.

A Hessian-vector product by double backprop runs the backward of every node of
the first backward pass. PyTorch's own formulas for those are general and slow
on the CPU:

* batch norm's (``batchnorm_double_backward``) is composite, about 40 full-size
  elementwise passes per layer, several computed twice;
* a convolution's (``_convolution_double_backward``) gets the weight term from a
  convolution of batch-and-channel-transposed copies of its inputs, which
  oneDNN runs at a fraction of its speed (a 64x16x32x32 layer: 19 ms, plus two
  8 ms copies, against 3-6 ms for ``convolution_backward``);
* ReLU's hands a full-size tensor of zeros back to the ReLU's output, which the
  engine fills and adds; average pooling's hands back a contiguous one, which
  turns every gradient below it contiguous in a channels-last network (so does
  global pooling's first backward).

:class:`DoubleBackward` swaps the exact ``nn.Conv2d``, ``nn.BatchNorm2d``,
``nn.ReLU``, ``nn.AvgPool2d`` and ``nn.AdaptiveAvgPool2d`` modules of a model,
in place, for subclasses whose first backward is the same fused kernel autograd
calls (``convolution_backward``, ``native_batch_norm_backward``,
``threshold_backward``: the gradients are autograd's own) and whose second
backward is written out:

* convolution ``y = conv(x, w)``, first backward ``(gO) -> (gx, gw)``; given the
  gradients ``A`` of ``gx`` and ``B`` of ``gw``: ``d gO = conv(A, w) + conv(x, B)``,
  ``d w = convolution_backward(gO, A)``'s weight gradient, ``d x =
  convolution_backward(gO, x, weight=B)``'s input gradient: four fast kernels;
* batch norm (train mode) ``y = g x^ + b``, ``x^ = (x - mu) r``, first backward
  ``gx = g r (gO - sum(gO)/M - x^ sum(gO x^)/M)``; the gradients of the sum
  ``<A, gx> + <Bg, gg> + <Bb, gb>`` in ``gO``, ``x`` and ``g`` are per-channel
  coefficients times ``gO``, ``A`` and ``x^`` (derived in ``_BatchNormBackward``):
  about six full-size passes and two fused per-channel reductions;
* ReLU: the derivative of the mask is zero, so nothing flows back to the output;
* average pooling is a depthwise convolution of ones (times ``1 / count`` when
  the padding is not counted), a linear map ``P``: its backward is ``P^T`` and
  that one's is ``P``, both on oneDNN's depthwise kernels; global pooling is
  autograd's, its input gradient put back in the input's layout.

:meth:`DoubleBackward.hessian_times_weights` gives ``H w`` (the Hessian times
the weights themselves) for two convolution kernels per layer instead of four:
for ``B = w``, ``conv(x, B)`` is the forward output and ``convT(gO, B)`` the
first backward's ``gx``, which :meth:`DoubleBackward.recording` keeps. GraSP's
``w . Hg`` is ``g . Hw`` (``H`` is symmetric).

Anything else (other module types, ``padding="same"``, eval-mode batch norm, an
in-place ReLU, ``ceil_mode`` pooling) keeps autograd's own formulas. The forward
values and both derivatives are the same functions as autograd's
(``gradgradcheck`` and a float64 comparison in the tests); only float rounding
differs: in the second derivatives, in pooling (a sum times ``1 / count``), and
in batch norm's statistics, which are computed in two passes.

:meth:`DoubleBackward.inputs_only` tells the convolutions and batch norms that
the backward pass being run wants gradients of inputs alone (an input Jacobian):
a custom ``Function`` cannot see which of its inputs the engine will use, so
without it they would compute their weight gradients for nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx

from nas.evaluators._proxies import _grads


class DoubleBackward:
    """Installs the cheap-double-backward modules in a model, and takes them out again.

    ``DoubleBackward()`` installs nothing: its :meth:`inputs_only` is then a no-op.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        >>> kernels = DoubleBackward(model)
        >>> type(model[0]).__name__
        '_Conv2d'
        >>> kernels.remove()
        >>> type(model[0]).__name__
        'Conv2d'
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self.weights = True  # read by every backward: whether weight gradients are wanted
        self.calls: list[ConvCall] | None = None  # set while recording()
        self._swapped: list[tuple[nn.Module, type[nn.Module]]] = []
        if model is not None:
            self.install(model)

    def install(self, model: nn.Module) -> None:
        """Swaps the supported modules of ``model`` (see the module docstring)."""
        for module in model.modules():
            fast = _FAST.get(type(module))
            if fast is not None and fast.supports(module):
                self._swapped.append((module, type(module)))
                module.__class__ = fast
                module._double_backward = self  # type: ignore[assignment]

    def remove(self) -> None:
        """Gives every swapped module its own class back."""
        for module, cls in self._swapped:
            module.__class__ = cls
            del module._double_backward
        self._swapped.clear()

    @contextmanager
    def recording(self) -> Iterator[list[ConvCall]]:
        """The convolution calls whose weight gradient the backward passes run inside compute.

        Run the first backward pass inside, with ``create_graph=True``, and give
        the calls to :meth:`hessian_times_weights`.
        """
        calls: list[ConvCall] = []
        self.calls = calls
        try:
            yield calls
        finally:
            self.calls = None

    def hessian_times_weights(
        self,
        calls: Sequence[ConvCall],
        weights: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor | None],
    ) -> list[torch.Tensor]:
        """``H w``: the Hessian of the loss in ``weights`` times the weights themselves.

        ``grads`` is the loss's gradient in ``weights``, taken with ``create_graph``
        inside :meth:`recording`, which gave ``calls``. ``H w`` is the gradient of
        ``sum(g . stop_grad(w))``; for a recorded convolution ``y = conv(x, w)``,
        whose weight gradient is ``corr(x, gO)``, that term is ``<gO, conv(x,
        stop_grad(w))>`` and its gradient flows through ``gO`` with ``y`` and
        through ``x`` with ``convT(gO, w) = gx``: both known, so the second
        backward of a convolution runs two kernels instead of four. Other
        weights take the product itself. Zeros where the gradient does not
        depend on a weight.
        """
        recorded = {call.weight for call in calls}
        pairs = [  # (a tensor, its cotangent)
            (call.grad_output, call.output) for call in calls if call.grad_output.requires_grad
        ]
        pairs += [
            (call.input, call.grad_input)
            for call in calls
            if call.grad_input is not None and call.input.grad_fn is not None
        ]
        pairs += [
            (g, w.detach())
            for w, g in zip(weights, grads, strict=True)
            if id(w) not in recorded and g is not None and g.requires_grad
        ]
        if not pairs:  # the gradient does not depend on the weights
            return [torch.zeros_like(w) for w in weights]
        # The cotangents go in as they are: no product tensors, no sum to differentiate.
        outputs, cotangents = zip(*pairs, strict=True)
        return _grads(outputs, weights, cotangents)

    @contextmanager
    def inputs_only(self) -> Iterator[None]:
        """The backward passes run inside want no weight gradient (an input Jacobian, say)."""
        self.weights = False
        try:
            yield
        finally:
            self.weights = True


_CONV_PARAMS = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]


@dataclass(frozen=True)
class ConvCall:
    """One call ``y = conv(x, w)`` seen by a recorded backward pass (see ``recording``).

    ``weight`` is ``id(w)``; ``grad_output`` (``gO``) and ``input`` (``x``) are
    graph tensors, ``output`` (``y``, without the bias) and ``grad_input``
    (``convT(gO, w)``, ``None`` when ``x`` needs no gradient) are detached.
    """

    weight: int
    grad_output: torch.Tensor
    input: torch.Tensor
    output: torch.Tensor
    grad_input: torch.Tensor | None


def _conv_backward(
    g_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    params: _CONV_PARAMS,
    mask: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dw)`` of ``<g_out, conv(x, weight)>`` that ``mask`` asks for: one fused kernel."""
    stride, padding, dilation, groups = params
    gx, gw, _ = torch.ops.aten.convolution_backward(
        g_out, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [*mask, False]
    )
    return (gx if mask[0] else None), (gw if mask[1] else None)


class _ConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, params: _CONV_PARAMS, owner: DoubleBackward
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.params, ctx.owner, ctx.weight_id = params, owner, id(weight)
        stride, padding, dilation, groups = params
        y = F.conv2d(x, weight, None, stride, padding, dilation, groups)
        ctx.output = y.detach()  # an alias, for hessian_times_weights
        return y

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        owner = ctx.owner
        mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1] and owner.weights)
        gx, gw = _ConvBackward.apply(g_out, x, weight, ctx.params, mask)
        if owner.calls is not None and mask[1]:
            grad_input = None if gx is None else gx.detach()
            owner.calls.append(ConvCall(ctx.weight_id, g_out, x, ctx.output, grad_input))
        return gx, gw, None, None


class _ConvBackward(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        g_out: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor,
        params: _CONV_PARAMS,
        mask: tuple[bool, bool],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        ctx.save_for_backward(g_out, x, weight)
        ctx.params = params
        ctx.set_materialize_grads(False)
        return _conv_backward(g_out, x, weight, params, mask)

    @staticmethod
    def backward(ctx: Any, a: torch.Tensor | None, b: torch.Tensor | None) -> tuple[Any, ...]:
        g_out, x, weight = ctx.saved_tensors
        params = ctx.params
        stride, padding, dilation, groups = params
        need_g_out, need_x, need_weight = ctx.needs_input_grad[:3]
        d_g_out = d_x = d_weight = None
        if need_g_out:
            if a is not None:
                d_g_out = F.conv2d(a, weight, None, stride, padding, dilation, groups)
            if b is not None:
                term = F.conv2d(x, b, None, stride, padding, dilation, groups)
                d_g_out = term if d_g_out is None else d_g_out.add_(term)
        if need_weight and a is not None:
            _, d_weight = _conv_backward(g_out, a, weight, params, (False, True))
        if need_x and b is not None:
            d_x, _ = _conv_backward(g_out, x, b, params, (True, False))
        return d_g_out, d_x, d_weight, None, None


class _Conv2d(nn.Conv2d):
    _double_backward: DoubleBackward

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return isinstance(module, nn.Conv2d) and (
            module.padding_mode == "zeros" and not isinstance(module.padding, str)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = (self.stride, self.padding, self.dilation, self.groups)
        y = _ConvFunction.apply(x, self.weight, params, self._double_backward)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def _channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over ``like`` (N, C, ...)."""
    return t.view(1, -1, *([1] * (like.dim() - 2)))


class _BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float,
        eps: float,
        owner: DoubleBackward,
    ) -> torch.Tensor:
        # Two passes for the statistics: the CPU's channels-last kernel sums x and x^2 in
        # one float32 pass (20x the error of the contiguous one), and var_mean is 6x slower.
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims)
        centred = x - _channel(mean, x)
        var = (centred * centred).mean(dims)
        invstd = torch.rsqrt(var + eps)
        x_hat = centred.mul_(_channel(invstd, x))  # kept: both backwards read it
        if weight is None or bias is None:
            y = x_hat.clone()
        else:
            y = torch.addcmul(_channel(bias, x), x_hat, _channel(weight, x))
        if running_mean is not None and running_var is not None:
            m = x.numel() // x.shape[1]
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (m / max(m - 1, 1)), momentum)
        # x itself only links the second backward's input gradient to the graph.
        ctx.save_for_backward(x, x_hat, weight, invstd)
        ctx.eps, ctx.owner = eps, owner
        return y

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[Any, ...]:
        x, x_hat, weight, invstd = ctx.saved_tensors
        affine = weight is not None and ctx.owner.weights
        mask = (ctx.needs_input_grad[0], affine and ctx.needs_input_grad[1], affine)
        gx, g_weight, g_bias = _BatchNormBackward.apply(
            g_out, x, weight, x_hat, invstd, ctx.eps, mask
        )
        return gx, g_weight, g_bias, None, None, None, None, None


def _channel_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel ``(sum(a * b), sum(a))``: batch norm's own fused reduction (mean 0, scale 1).

    It sums as autograd's batch-norm backward sums; 4-5x faster here than a product
    tensor and two ``sum`` calls.
    """
    ones = torch.ones(a.shape[1], dtype=a.dtype, device=a.device)
    _, sum_ab, sum_a = torch.ops.aten.native_batch_norm_backward(
        a, b, ones, None, None, torch.zeros_like(ones), ones, True, 0.0, [False, True, True]
    )
    return sum_ab, sum_a


class _BatchNormBackward(torch.autograd.Function):
    """``(gO, x, g) -> (gx, gg, gb)`` of train-mode batch norm, and its own backward.

    With ``M`` the elements per channel and per channel ``r`` (the inverse std),
    ``x^ = (x - mu) r``, ``Sg = sum(gO)``, ``Sx = sum(gO x^)``, the first backward
    is ``gx = g r (gO - Sg/M - x^ Sx/M)``, ``gg = Sx``, ``gb = Sg``. Given the
    gradients ``A``, ``Bg``, ``Bb`` of ``gx``, ``gg``, ``gb``, write ``a = sum(A)``,
    ``ax = sum(A x^)``, ``ag = sum(A gO)``; then ``Phi = <A, gx> + Bg Sx + Bb Sg``
    per channel is ``sum(gO (g r A + p x^ + c))`` with ``p = Bg - g r ax/M`` and
    ``c = Bb - g r a/M``, so

    * ``d gO = g r A + p x^ + c``;
    * ``d g = r (ag - a Sg/M - ax Sx/M)``;
    * ``d x``: ``Phi`` reads ``x`` through ``x^`` (partial ``G = p gO + q A``, ``q =
      -g r Sx/M``) and through ``r`` (partial ``K = g (ag - a Sg/M) - g ax Sx/M``),
      and ``dx^ = r (dx - mean(dx) - x^ mean(x^ dx))``, ``dr = -r^2 mean(x^ dx)``, so
      ``d x = r (G - sum(G)/M - x^ sum(G x^)/M) - (r^2/M) K x^`` with ``sum(G) =
      p Sg + q a`` and ``sum(G x^) = p Sx + q ax``: ``alpha gO + beta A + delta x^ + e``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        g_out: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        x_hat: torch.Tensor,
        invstd: torch.Tensor,
        eps: float,
        mask: tuple[bool, bool, bool],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        # The fused kernel on x^ (mean 0, inverse std 1) with weight g r is the same gradient.
        # Its weight and bias gradients are Sx and Sg, which the second backward reads.
        gr = invstd if weight is None else weight * invstd
        gx, s_x, s_g = torch.ops.aten.native_batch_norm_backward(
            g_out,
            x_hat,
            gr,
            None,
            None,
            torch.zeros_like(invstd),
            torch.ones_like(invstd),
            True,
            eps,
            [mask[0], True, True],
        )
        ctx.save_for_backward(g_out, weight, x_hat, invstd, s_x, s_g)
        ctx.set_materialize_grads(False)
        return (
            gx if mask[0] else None,
            s_x if mask[1] else None,
            s_g if mask[2] else None,
        )

    @staticmethod
    def backward(
        ctx: Any, a_in: torch.Tensor | None, b_g: torch.Tensor | None, b_b: torch.Tensor | None
    ) -> tuple[Any, ...]:
        g_out, weight, x_hat, invstd, s_x, s_g = ctx.saved_tensors
        need_g_out, need_x, need_weight = ctx.needs_input_grad[:3]
        m = x_hat.numel() // x_hat.shape[1]
        r = invstd
        gr = r if weight is None else weight * r
        zero = torch.zeros_like(r)
        if a_in is None:
            a = ax = ag = zero
        else:
            ax, a = _channel_sums(a_in, x_hat)
            ag = _channel_sums(a_in, g_out)[0] if (need_x or need_weight) else zero
        p = (zero if b_g is None else b_g) - gr * ax / m
        c = (zero if b_b is None else b_b) - gr * a / m

        d_g_out = d_x = d_weight = None
        if need_g_out:
            d_g_out = torch.addcmul(_channel(c, x_hat), x_hat, _channel(p, x_hat))
            if a_in is not None:
                d_g_out.addcmul_(a_in, _channel(gr, x_hat))
        if need_weight:
            d_weight = r * (ag - a * s_g / m - ax * s_x / m)
        if need_x:
            gamma = torch.ones_like(r) if weight is None else weight
            q = -gr * s_x / m
            k = gamma * (ag - a * s_g / m) - gamma * ax * s_x / m
            sum_g, sum_g_x = p * s_g + q * a, p * s_x + q * ax
            delta = -r * sum_g_x / m - (r * r / m) * k
            d_x = torch.addcmul(_channel(-r * sum_g / m, x_hat), g_out, _channel(r * p, x_hat))
            d_x.addcmul_(x_hat, _channel(delta, x_hat))
            if a_in is not None:
                d_x.addcmul_(a_in, _channel(r * q, x_hat))
        return d_g_out, d_x, d_weight, None, None, None, None


class _BatchNorm2d(nn.BatchNorm2d):
    _double_backward: DoubleBackward

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return isinstance(module, nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)  # as _BatchNorm.forward
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        tracked = self.track_running_stats
        return _BatchNormFunction.apply(
            x,
            self.weight,
            self.bias,
            self.running_mean if tracked else None,
            self.running_var if tracked else None,
            momentum,
            self.eps,
            self._double_backward,
        )


class _ReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return _ReLUBackward.apply(g_out, out)


class _ReLUBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g_out: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(out)
        return torch.ops.aten.threshold_backward(g_out, out, 0)

    @staticmethod
    def backward(ctx: FunctionCtx, gg: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.ops.aten.threshold_backward(gg, out, 0), None


class _ReLU(nn.ReLU):
    _double_backward: DoubleBackward

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return isinstance(module, nn.ReLU) and not module.inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReLUFunction.apply(x)


_POOL_PARAMS = tuple[tuple[int, int], tuple[int, int], tuple[int, int], bool]


def _pool_weight(x: torch.Tensor, params: _POOL_PARAMS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The depthwise ``(C, 1, kh, kw)`` weight of an average pooling, and its ``1 / count`` map.

    Counting the padding, the weight is ``1 / (kh kw)`` and there is no map; not
    counting it, the weight is ones and the map (``(1, 1, H', W')``) divides each
    output by the input positions its window covers. Both are made once per shape
    (and read, never written).
    """
    return _pool_constants(x.shape[1], tuple(x.shape[2:]), x.dtype, x.device, params)


@functools.lru_cache(maxsize=64)
def _pool_constants(
    channels: int,
    size: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    params: _POOL_PARAMS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    kernel, stride, padding, count_pad = params
    if count_pad:
        value = 1.0 / (kernel[0] * kernel[1])
        return torch.full((channels, 1, *kernel), value, dtype=dtype, device=device), None
    weight = torch.ones((channels, 1, *kernel), dtype=dtype, device=device)
    ones = torch.ones((1, 1, *size), dtype=dtype, device=device)
    count = F.conv2d(ones, weight[:1], None, stride, padding)
    return weight, count.reciprocal_()


class _AvgPoolFunction(torch.autograd.Function):
    """``P x``: average pooling as a depthwise convolution of ones (oneDNN's depthwise
    kernels are 4-6x faster than its pooling ones here); ``P`` is linear, so its
    backward is :class:`_AvgPoolAdjoint` and that one's is ``P`` again."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, params: _POOL_PARAMS) -> torch.Tensor:
        ctx.params, ctx.input_shape = params, x.shape
        weight, inverse_count = _pool_weight(x, params)
        _, stride, padding, _ = params
        y = F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])
        return y if inverse_count is None else y.mul_(inverse_count)

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AvgPoolAdjoint.apply(g_out, ctx.input_shape, ctx.params), None


class _AvgPoolAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, g_out: torch.Tensor, input_shape: torch.Size, params: _POOL_PARAMS
    ) -> torch.Tensor:
        ctx.params = params
        # Only its shape, dtype and layout are read (the gradient's layout is the input's).
        like = torch.empty(
            input_shape, dtype=g_out.dtype, device=g_out.device, memory_format=_layout(g_out)
        )
        weight, inverse_count = _pool_weight(like, params)
        _, stride, padding, _ = params
        g = g_out if inverse_count is None else g_out * inverse_count
        (gx, _, _) = torch.ops.aten.convolution_backward(
            g,
            like,
            weight,
            None,
            stride,
            padding,
            [1, 1],
            False,
            [0, 0],
            input_shape[1],
            [True, False, False],
        )
        return gx

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _AvgPoolFunction.apply(gg, ctx.params), None, None


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


class _AvgPool2d(nn.AvgPool2d):
    """Average pooling as a depthwise convolution (see :class:`_AvgPoolFunction`).

    Autograd's own double backward of ``avg_pool2d`` also hands back a
    contiguous tensor of zeros, which turns a channels-last gradient contiguous.
    """

    _double_backward: DoubleBackward

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return (
            isinstance(module, nn.AvgPool2d)
            and not module.ceil_mode
            and module.divisor_override is None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        kernel = _pair(self.kernel_size)
        stride = kernel if self.stride in (None, ()) else _pair(self.stride)
        params = (kernel, stride, _pair(self.padding), self.count_include_pad)
        return _AvgPoolFunction.apply(x, params)


def _layout(t: torch.Tensor) -> torch.memory_format:
    """``t``'s own memory format: channels-last if it is laid out so (and not also contiguous)."""
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if last and not t.is_contiguous() else torch.contiguous_format


class _KeepLayout(torch.autograd.Function):
    """The identity, whose gradient (and its gradient, ...) has the input's memory format."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.layout = _layout(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> torch.Tensor:
        return _KeepLayout.apply(g_out.contiguous(memory_format=ctx.layout))


class _AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """Global average pooling whose input gradient keeps the input's layout.

    Autograd's is an expanded ``(N, C, 1, 1)`` tensor divided by ``H W``, which
    comes out contiguous: a channels-last network would then run the whole
    backward pass below it (and the Hessian pass) on contiguous tensors, at a
    fraction of oneDNN's speed.
    """

    _double_backward: DoubleBackward

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return isinstance(module, nn.AdaptiveAvgPool2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(_KeepLayout.apply(x), self.output_size)


_FAST: dict[type[nn.Module], Any] = {
    nn.Conv2d: _Conv2d,
    nn.BatchNorm2d: _BatchNorm2d,
    nn.ReLU: _ReLU,
    nn.AdaptiveAvgPool2d: _AdaptiveAvgPool2d,
    nn.AvgPool2d: _AvgPool2d,
}
