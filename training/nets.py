"""Networks of ZAugNet, ZAugNet+ and ZAugNet-C: flow-estimating student, teacher, refinement, critic.

Shapes are ``(batch, channel, y, x)``. The generator's input is ONE tensor whose channels are the
two neighbouring slices ``[slice_0, slice_1]`` and, for ZAugNet+, a constant DPM plane holding the
relative position ``z`` in [0, 1] of the slice to predict: ``[slice_0, slice_1, dpm]``. ZAugNet-C
(:class:`ContextStudent`) takes K slices at the gap's spacing, ``[slice_-1, slice_0, slice_1,
slice_2, dpm]`` for K = 4, and returns the 4-point cubic estimate plus a learned correction.
Intensities are expected in [0, 1] (joint range of the input slices); ZAugNet and ZAugNet+ clamp
their prediction to [0, 1], ZAugNet-C does not (cubic interpolation may overshoot the inputs' range).

Everything here works at any H x W (reflect padding to a multiple of 16 inside the forward pass)
and builds its sampling grids from the tensor's own shape, so the student can be scripted or
traced and then run at other sizes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NetConfig

#: H and W are padded to a multiple of this (two stride-2 convs at 1/4 scale; a 4-level U-Net).
SIZE_MULTIPLE = 16


def conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution with bias followed by a per-channel PReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=True), nn.PReLU(out_ch))


def conv2(in_ch: int, out_ch: int) -> nn.Sequential:
    """A stride-2 :func:`conv` followed by a stride-1 one (one level of the context net and U-Net)."""
    return nn.Sequential(conv(in_ch, out_ch, 2), conv(out_ch, out_ch, 1))


def deconv(in_ch: int, out_ch: int) -> nn.Sequential:
    """Transposed 4x4 stride-2 convolution followed by a per-channel PReLU (doubles H and W)."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=True), nn.PReLU(out_ch))


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``image`` by ``flow`` (pixels; channel 0 = x, channel 1 = y).

    Bilinear ``grid_sample`` with border padding and ``align_corners=True``. The grid is built
    from the tensor's shape on every call, so there is no cache tied to one size.

    The sampling grid (pixel coordinates plus flow, normalised to [-1, 1]) and the sampling itself are
    computed in float32 (float64 if an input is float64) whatever the inputs' dtype and the autocast
    state: bfloat16 holds integers exactly only up to 256, so bfloat16 coordinates would move samples by
    up to 2 pixels in a 1024-pixel slice. The result has the dtype an arithmetic operation on
    ``image`` and ``flow`` would give (float32 for bfloat16 features and a float32 flow, as under
    autocast, which runs ``grid_sample`` in float32 anyway).
    """
    b, _, h, w = image.shape
    out_dtype = torch.promote_types(image.dtype, flow.dtype)
    ct = torch.float64 if out_dtype == torch.float64 else torch.float32
    src = image if image.dtype == ct else image.to(ct)
    fl = flow if flow.dtype == ct else flow.to(ct)
    y_line = torch.arange(h, device=image.device, dtype=ct)
    x_line = torch.arange(w, device=image.device, dtype=ct)
    ys = y_line.view(1, h, 1).expand(b, h, w)
    xs = x_line.view(1, 1, w).expand(b, h, w)
    # normalised coordinates: -1 .. 1 across pixel centres (align_corners=True)
    if torch.jit.is_tracing():
        # h and w are traced values here: take max(n - 1, 1) from the coordinate lines, not with a
        # Python branch, so a traced (ONNX) graph stays valid at every size
        gx = (xs + fl[:, 0]) * (2.0 / torch.clamp(x_line[-1:], min=1.0)) - 1.0
        gy = (ys + fl[:, 1]) * (2.0 / torch.clamp(y_line[-1:], min=1.0)) - 1.0
    else:
        gx = (xs + fl[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
        gy = (ys + fl[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out if out.dtype == out_dtype else out.to(out_dtype)


def resize(x: Tensor, factor: float) -> Tensor:
    """Bilinear rescale by ``factor`` (identity for 1)."""
    if factor == 1.0:
        return x
    if torch.jit.is_scripting():
        # the op F.interpolate calls here, directly: scripting F.interpolate itself would copy its whole
        # body (every mode, and ops only recent torch releases have) into a TorchScript archive, which
        # older runtimes (libtorch 2.0 in deepImageJ) then refuse to load
        return torch._C._nn.upsample_bilinear2d(x, None, False, [factor, factor])
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class IFBlock(nn.Module):
    """One flow-estimation block: predicts flow and mask-logit increments at 1/``scale`` resolution.

    Parameters
    ----------
    in_channels
        Channels of the image part of the input (the flow's 4 channels are added when ``with_flow``).
    width
        Feature width ``c`` of the trunk.
    scale
        The block works at 1/scale of the input resolution.
    depth
        Number of 3x3 convolutions in the residual trunk (8 in the paper).
    with_flow
        Whether the block also takes the current flow (all blocks but the first).
    """

    def __init__(self, in_channels: int, width: int, scale: float, depth: int = 8, with_flow: bool = True) -> None:
        super().__init__()
        self.scale = float(scale)
        self.with_flow = with_flow
        first = in_channels + (4 if with_flow else 0)
        self.conv0 = nn.Sequential(conv(first, width // 2, 2), conv(width // 2, width, 2))
        self.trunk = nn.Sequential(*[conv(width, width) for _ in range(depth)])
        self.last = nn.ConvTranspose2d(width, 5, 4, 2, 1)

    def forward(self, x: Tensor, flow: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Return ``(flow, mask_logit)`` increments at the input's resolution."""
        x = resize(x, 1.0 / self.scale)
        if flow is not None:
            x = torch.cat((x, resize(flow, 1.0 / self.scale) * (1.0 / self.scale)), 1)
        x = self.conv0(x)
        x = self.trunk(x) + x
        out = resize(self.last(x), self.scale * 2.0)
        return out[:, :4] * (self.scale * 2.0), out[:, 4:5]


class ContextNet(nn.Module):
    """Feature pyramid of one slice (4 levels, widths c, 2c, 4c, 8c), each level warped by the flow."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList([conv2(1, width), conv2(width, 2 * width), conv2(2 * width, 4 * width),
                                     conv2(4 * width, 8 * width)])

    def forward(self, image: Tensor, flow: Tensor) -> list[Tensor]:
        """Return the 4 warped feature maps at 1/2, 1/4, 1/8 and 1/16 resolution."""
        features: list[Tensor] = []
        x = image
        for level in self.levels:
            x = level(x)
            flow = resize(flow, 0.5) * 0.5
            features.append(warp(x, flow))
        return features


class RefineUNet(nn.Module):
    """U-Net that turns slices, warped slices, mask, flow and context features into a residual."""

    def __init__(self, width: int, in_channels: int = 9) -> None:
        super().__init__()
        c = width
        self.down0 = conv2(in_channels, 2 * c)
        self.down1 = conv2(4 * c, 4 * c)
        self.down2 = conv2(8 * c, 8 * c)
        self.down3 = conv2(16 * c, 16 * c)
        self.up0 = deconv(32 * c, 8 * c)
        self.up1 = deconv(16 * c, 4 * c)
        self.up2 = deconv(8 * c, 2 * c)
        self.up3 = deconv(4 * c, c)
        self.out = nn.Conv2d(c, 1, 3, 1, 1)

    def forward(self, x: Tensor, c0: list[Tensor], c1: list[Tensor]) -> Tensor:
        """Return the residual in [-1, 1]."""
        s0 = self.down0(x)
        s1 = self.down1(torch.cat((s0, c0[0], c1[0]), 1))
        s2 = self.down2(torch.cat((s1, c0[1], c1[1]), 1))
        s3 = self.down3(torch.cat((s2, c0[2], c1[2]), 1))
        y = self.up0(torch.cat((s3, c0[3], c1[3]), 1))
        y = self.up1(torch.cat((y, s2), 1))
        y = self.up2(torch.cat((y, s1), 1))
        y = self.up3(torch.cat((y, s0), 1))
        return torch.sigmoid(self.out(y)) * 2.0 - 1.0


class Student(nn.Module):
    """The generator used for prediction: three IFBlocks, blending, context net and refinement U-Net.

    ``forward(x)`` takes ``x = [slice_0, slice_1 (, dpm)]`` in [0, 1] and returns the predicted
    slice ``(B, 1, H, W)`` in [0, 1]. :meth:`stages` exposes what training needs.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.with_dpm = cfg.with_dpm
        self.size_multiple = SIZE_MULTIPLE
        self.in_channels = 3 if self.with_dpm else 2
        extra = 1 if self.with_dpm else 0
        w0, w1, w2 = cfg.block_widths
        self.blocks = nn.ModuleList([
            IFBlock(2 + extra, w0, 4.0, cfg.trunk_depth, with_flow=False),
            IFBlock(5 + extra, w1, 2.0, cfg.trunk_depth),
            IFBlock(5 + extra, w2, 1.0, cfg.trunk_depth),
        ])
        self.context = ContextNet(cfg.context_width)
        self.unet = RefineUNet(cfg.unet_width)


    def stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor, Tensor]:
        """Run the three flow stages on an input whose H, W are multiples of :data:`SIZE_MULTIPLE`.

        Returns
        -------
        flows, blends, mask_logit, warped0, warped1
            The cumulative flow and the blended slice after each stage, and the final mask logit
            and warped slices (used by the teacher and the refinement).
        """
        img0, img1 = x[:, 0:1], x[:, 1:2]
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        flow = x.new_zeros((b, 4, h, w))
        mask = x.new_zeros((b, 1, h, w))
        w0, w1 = img0, img1
        flows: list[Tensor] = []
        blends: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            if i == 0:
                d_flow, d_mask = block(x[:, : self.in_channels], None)
            else:
                parts = [img0, img1, w0, w1, mask]
                if self.with_dpm:
                    parts.append(x[:, 2:3])
                d_flow, d_mask = block(torch.cat(parts, 1), flow)
            flow = flow + d_flow
            mask = mask + d_mask
            flows.append(flow)
            w0 = warp(img0, flow[:, :2])
            w1 = warp(img1, flow[:, 2:4])
            m = torch.sigmoid(mask)
            blends.append(w0 * m + w1 * (1.0 - m))
        return flows, blends, mask, w0, w1

    def refine(self, x: Tensor, flow: Tensor, mask: Tensor, w0: Tensor, w1: Tensor, blend: Tensor) -> Tensor:
        """Add the U-Net's residual to the final blend and clamp to [0, 1]."""
        img0, img1 = x[:, 0:1], x[:, 1:2]
        c0 = self.context(img0, flow[:, :2])
        c1 = self.context(img1, flow[:, 2:4])
        res = self.unet(torch.cat((img0, img1, w0, w1, mask, flow), 1), c0, c1)
        return torch.clamp(blend + res, 0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Predict the slice at the DPM's position (ZAugNet: the midpoint); any H x W >= 2."""
        h, w = x.shape[2], x.shape[3]
        xp = pad_to_multiple(x, self.size_multiple)
        flows, blends, mask, w0, w1 = self.stages(xp)
        out = self.refine(xp, flows[-1], mask, w0, w1, blends[-1])
        return out[:, :, :h, :w]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad the bottom and right of ``x`` so H and W are multiples of ``multiple``.

    Falls back to replicate padding where the image is too small to reflect.

    Under ``torch.jit.trace`` (and so the ONNX exporter) the padding amounts stay computations on
    the input's shape, with no Python branch on them: the traced graph always reflect-pads (by 0
    where nothing is needed), which is exact for any H, W >= ``multiple``.
    """
    h, w = x.shape[2], x.shape[3]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    if torch.jit.is_tracing():
        return F.pad(x, [0, pw, 0, ph], mode="reflect")
    if ph == 0 and pw == 0:
        return x
    if ph < h and pw < w:
        return F.pad(x, [0, pw, 0, ph], mode="reflect")
    return F.pad(x, [0, pw, 0, ph], mode="replicate")


def cubic_weights(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keys cubic-convolution weights (a = -0.5) of slices -1, 0, 1, 2 at relative position ``z`` in [0, 1].

    Polynomials in ``z`` (elementwise, so ``z`` may be a DPM plane); they sum to one, give slice 0
    at z = 0 and slice 1 at z = 1, and match :func:`zaugnet.training.baselines.keys_weights`.
    """
    z2 = z * z
    z3 = z2 * z
    return (-0.5 * z3 + z2 - 0.5 * z, 1.5 * z3 - 2.5 * z2 + 1.0, -1.5 * z3 + 2.0 * z2 + 0.5 * z, 0.5 * z3 - 0.5 * z2)


class ContextStudent(nn.Module):
    """ZAugNet-C: cubic interpolation of the inner four slices plus a learned correction.

    ``forward(x)`` takes ``x = [slice_-(K/2-1), ..., slice_0, slice_1, ..., slice_K/2, dpm]`` in
    [0, 1] (the slices at the gap's spacing, edge slices repeated at the ends of a stack) and
    returns ``cubic + head(...)``. ``flow`` is a ZAugNet+ :class:`Student` on ``[slice_0, slice_1,
    dpm]`` whose prediction the head sees beside the slices and the cubic estimate; the head's last
    convolution starts at zero, so an untrained model is exactly cubic interpolation.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.with_dpm = True
        self.size_multiple = SIZE_MULTIPLE
        self.n_slices = cfg.n_slices
        self.in_channels = self.n_slices + 1
        self.inner = self.n_slices // 2 - 1  # channel of slice_0
        self.flow = Student(cfg)  # with the DPM, as ZAugNet+
        w = cfg.head_width
        self.head = nn.Sequential(conv(self.n_slices + 3, w), conv(w, w), conv(w, w), conv(w, w),
                                  nn.Conv2d(w, 1, 3, 1, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def flow_input(self, x: Tensor) -> Tensor:
        """``[slice_0, slice_1, dpm]``: the flow branch's input."""
        i = self.inner
        return torch.cat((x[:, i:i + 2], x[:, self.n_slices:self.n_slices + 1]), 1)

    def cubic(self, x: Tensor) -> Tensor:
        """The 4-point cubic estimate at the DPM's position, ``(B, 1, H, W)``."""
        i = self.inner
        w_m, w_0, w_1, w_2 = cubic_weights(x[:, self.n_slices:self.n_slices + 1])
        return (w_m * x[:, i - 1:i] + w_0 * x[:, i:i + 1] + w_1 * x[:, i + 1:i + 2]
                + w_2 * x[:, i + 2:i + 3])

    def correct(self, x: Tensor, flow_prediction: Tensor) -> Tensor:
        """Cubic estimate plus the head's correction, given the flow branch's prediction."""
        base = self.cubic(x)
        return base + self.head(torch.cat((x, base, flow_prediction), 1))

    def forward(self, x: Tensor) -> Tensor:
        """Predict the slice at the DPM's position; any H x W >= 2."""
        return self.correct(x, self.flow(self.flow_input(x)))


def build_student(cfg: NetConfig) -> nn.Module:
    """The student of ``cfg.variant``: :class:`Student`, or :class:`ContextStudent` for ``zaugnet-c``."""
    return ContextStudent(cfg) if cfg.variant == "zaugnet-c" else Student(cfg)


class Generator(nn.Module):
    """Student plus the training-only teacher block that also sees the ground-truth slice.

    For ZAugNet-C the teacher and the distillation act on the flow branch.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.student = build_student(cfg)
        extra = 1 if cfg.with_dpm else 0
        self.teacher = IFBlock(6 + extra, cfg.teacher_width, 1.0, cfg.trunk_depth)

    def forward(self, x: Tensor, gt: Tensor) -> dict[str, Tensor]:
        """Training forward pass on inputs whose H, W are multiples of :data:`SIZE_MULTIPLE`.

        Returns
        -------
        dict
            ``student`` (refined prediction), ``teacher`` (teacher's blend), ``distill`` (distillation
            loss) and, for ZAugNet-C, ``flow`` (the flow branch's own prediction).
        """
        context = isinstance(self.student, ContextStudent)
        st = self.student.flow if context else self.student
        xf = self.student.flow_input(x) if context else x
        flows, blends, mask, w0, w1 = st.stages(xf)
        img0, img1 = xf[:, 0:1], xf[:, 1:2]
        parts = [img0, img1, w0, w1, mask, gt]
        if st.with_dpm:
            parts.append(xf[:, 2:3])
        d_flow, d_mask = self.teacher(torch.cat(parts, 1), flows[-1])
        flow_t = flows[-1] + d_flow
        m_t = torch.sigmoid(mask + d_mask)
        teacher = warp(img0, flow_t[:, :2]) * m_t + warp(img1, flow_t[:, 2:4]) * (1.0 - m_t)
        distill = distillation_loss(flows, blends, flow_t, teacher, gt)
        refined = st.refine(xf, flows[-1], mask, w0, w1, blends[-1])
        if context:
            return {"student": self.student.correct(x, refined), "flow": refined, "teacher": teacher,
                    "distill": distill}
        return {"student": refined, "teacher": teacher, "distill": distill}


def distillation_loss(flows: list[Tensor], blends: list[Tensor], flow_t: Tensor, teacher: Tensor, gt: Tensor,
                      margin: float = 0.01) -> Tensor:
    """Pull each student stage's flow towards the teacher's where the teacher is clearly better.

    For each stage: over pixels where the stage's absolute error exceeds the teacher's by more than
    ``margin`` (a mask without gradient), the RMS over the 4 flow channels of ``teacher - stage``
    (teacher detached), averaged over all pixels; summed over stages.
    """
    t_err = (teacher - gt).abs().detach()
    target = flow_t.detach()
    total = torch.zeros((), device=gt.device, dtype=gt.dtype)
    for flow, blend in zip(flows, blends):
        worse = ((blend - gt).abs().detach() > t_err + margin).to(gt.dtype)
        rms = ((target - flow) ** 2).mean(1, keepdim=True).add(1e-12).sqrt()
        total = total + (rms * worse).mean()
    return total


class Critic(nn.Module):
    """WGAN-GP critic: 6 stride-2 4x4 convs (LeakyReLU 0.2) and a final 4x4 conv, no bias, no normalisation.

    Sees one slice (never the DPM). Any crop size works: inputs smaller than 64 x 64 are
    replicate-padded to 64, a feature map smaller than 4 x 4 before the last conv is zero-padded to
    4 x 4, and the score is the mean of the output map per sample.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        chans = [1] + [width * 2**i for i in range(6)]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(chans[-1], 1, 4, 1, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Return one score per sample, shape ``(B,)``."""
        ph, pw = max(0, 64 - x.shape[2]), max(0, 64 - x.shape[3])
        if ph or pw:
            x = F.pad(x, [0, pw, 0, ph], mode="replicate")
        f = self.features(x)
        ph, pw = max(0, 4 - f.shape[2]), max(0, 4 - f.shape[3])
        if ph or pw:
            f = F.pad(f, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return self.head(f).flatten(1).mean(1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
