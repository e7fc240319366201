"""A no-reference self-check of deconvolution methods on the user's own stack (``deconv predict --method auto``).

Every candidate (a method on volumes, as in :mod:`.predict`) deconvolves the *odd* slices of the volume
(its 1st, 3rd, ... slices: a volume at twice the z spacing). Its output, normalised by the model's affine, is
re-blurred by the PSF at that spacing and compared with the *even* slices (2nd, 4th, ...), normalised the
same way: the score is the mean absolute error. The even slices carry noise independent of the odd ones,
so a method that fits the odd slices' noise (Richardson-Lucy iterated too long), deconvolves with a wrong
PSF or does not deconvolve at all scores worse than one that recovers the object. Lower is better.

Alignment in z: Richardson-Lucy (and the identity) returns the object on the odd slices' planes, so its
re-blurred output predicts those planes; it is interpolated linearly half-way between each pair (the even
slices' planes). A ZS-DeconvNet is trained for exactly this (from the odd slices, an object whose blur is
the even slices, :mod:`zaugnet.training.deconv.losses`): its re-blurred output is compared directly
(:attr:`Candidate.aligned`). Every candidate is scored on the same even slices: all but the last, within
the held-out block when there is one. The check runs each method at twice the z spacing (where a
ZS-DeconvNet was trained); the chosen one then runs on the whole stack, Richardson-Lucy with the PSF of the
same extent at the stack's spacing and the count the check picked.

The choice (:func:`choose`): the lowest score, except that a model scored on slices it was trained on
(no held-out block) is optimistic, its loss having minimised this very error there; it is then chosen only
if it beats the best Richardson-Lucy by :data:`MODEL_MARGIN` (relative), else that Richardson-Lucy is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .forward import FFTConvolver
from .predict import Affine, RLDeconvolver

__all__ = ["DEFAULT_ITERATIONS", "MODEL_MARGIN", "REBLUR_PADDING", "Candidate", "SelfCheck", "choose",
           "reblur_error", "rl_candidates", "scored_rows", "self_check", "split_volume"]

#: Richardson-Lucy iteration counts the self-check tries by default.
DEFAULT_ITERATIONS = (5, 10, 20, 40)
#: A model scored on its own training slices must have an error this much lower (relative) than the best
#: Richardson-Lucy to be chosen: 10 %, well beyond the spread of the errors of neighbouring RL counts on
#: the benchmark (a few %), so that only a clear win counts.
MODEL_MARGIN = 0.10
#: Boundary rules of the re-blurring: those of :class:`~.forward.FFTConvolver`, and ``"axial-zeros"`` (zeros
#: above and below, mirrored in y and x), the loss's rules.
REBLUR_PADDING = ("reflect", "zeros", "axial-zeros")

#: A method on volumes: ZYX in the volume's units -> ``(denoised or None, deconvolved)``.
Method = Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray]]


@dataclass(frozen=True)
class Candidate:
    """One method the self-check scores.

    Parameters
    ----------
    name
        How the table shows it (``"model"``, ``"rl 20"``).
    method
        See :data:`Method`.
    aligned
        Its output on the odd slices already stands for the even slices' planes (a ZS-DeconvNet); False: for
        the odd slices' own planes (Richardson-Lucy, the identity), interpolated half-way after re-blurring.
    iterations
        Richardson-Lucy's count, None for anything else.
    """

    name: str
    method: Method
    aligned: bool = False
    iterations: int | None = None


@dataclass(frozen=True)
class SelfCheck:
    """The self-check's scores (name -> MAE, in the candidates' order), its choice and how it was scored."""

    scores: dict[str, float]
    choice: str
    rows: tuple[int, int]  # the even slices scored, as raw slice indices [first, last]
    held_out: bool  # scored on a block the model never trained on
    trained_on: bool  # a model was scored on slices it trained on (its score optimistic)
    margin: float

    def table(self) -> str:
        """One line: what was scored, each candidate's score, the choice."""
        where = (f"held-out slices {self.rows[0]}-{self.rows[1]}" if self.held_out
                 else f"slices {self.rows[0]}-{self.rows[1]}")
        caveat = (f"; the model was trained on these slices, its score is optimistic: it needs a "
                  f"{100 * self.margin:.0f} % lead over RL" if self.trained_on else "")
        scores = " | ".join(f"{name} {value:.5f}" for name, value in self.scores.items())
        return f"self-check (MAE of the re-blurred odd slices vs the even ones, {where}{caveat}): {scores} -> {self.choice}"


def split_volume(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The odd (1st, 3rd, ...) and even (2nd, 4th, ...) slices of a ZYX volume, ``Z // 2`` each (an odd last
    slice dropped), as :func:`~.forward.split_odd_even`."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.shape[0] < 4:
        raise ValueError(f"the self-check needs a ZYX volume of at least 4 slices, got shape {volume.shape}")
    half = volume.shape[0] // 2
    return volume[0:2 * half:2], volume[1:2 * half:2]


def scored_rows(n_slices: int, held_out: int = 0) -> np.ndarray:
    """Indices ``k`` into the even slices (raw slice ``2 k + 1``) the self-check scores: all but the last
    (which has no odd slice after it), only those within the last ``held_out`` raw slices if that is > 0.

    Raises
    ------
    ValueError
        Nothing is left to score.
    """
    half = n_slices // 2
    rows = np.arange(half - 1)
    if held_out > 0:
        rows = rows[2 * rows + 1 >= n_slices - held_out]
    if len(rows) == 0:
        raise ValueError(f"no even slice to score in {n_slices} slices (held out: {held_out})")
    return rows


def _blur(volume: np.ndarray, psf: np.ndarray, padding: str) -> np.ndarray:
    """``volume`` (ZYX) convolved with ``psf`` under one of :data:`REBLUR_PADDING` (float32)."""
    if padding not in REBLUR_PADDING:
        raise ValueError(f"padding must be one of {REBLUR_PADDING}, got {padding!r}")
    data = np.asarray(volume, dtype=np.float32)
    if padding == "axial-zeros":
        hy, hx = psf.shape[1] // 2, psf.shape[2] // 2
        data = np.pad(data, [(0, 0), (hy, hy), (hx, hx)], mode="reflect")
    kernel = torch.as_tensor(np.asarray(psf, dtype=np.float32))
    convolver = FFTConvolver(kernel, data.shape, "zeros" if padding == "axial-zeros" else padding)
    with torch.no_grad():
        out = convolver(torch.from_numpy(np.ascontiguousarray(data))[None, None])[0, 0].numpy()
    if padding == "axial-zeros":
        out = out[:, hy:out.shape[1] - hy, hx:out.shape[2] - hx]
    return out


def reblur_error(deconvolved: np.ndarray, even: np.ndarray, psf: np.ndarray, rows: Sequence[int], *,
                 affine: Affine, padding: str = "reflect", aligned: bool = False) -> float:
    """The self-check's score of one output: MAE between the re-blurred, normalised ``deconvolved`` (of the
    odd slices) and the normalised ``even`` slices, over ``rows`` of the even slices (module docstring).

    Parameters
    ----------
    deconvolved, even
        ZYX volumes of one shape, in the volume's units.
    psf
        The PSF at the odd slices' spacing (odd sizes; normalised to sum 1 here).
    rows
        Even slices to score (:func:`scored_rows`); for ``aligned=False`` each needs the next odd slice.
    affine
        Maps both to normalised units.
    padding
        One of :data:`REBLUR_PADDING`.
    aligned
        See :attr:`Candidate.aligned`.
    """
    deconvolved, even = np.asarray(deconvolved), np.asarray(even)
    if deconvolved.shape != even.shape:
        raise ValueError(f"output {deconvolved.shape} and even slices {even.shape} differ in shape")
    kernel = np.asarray(psf, dtype=np.float64)
    blurred = _blur(affine.normalise(deconvolved), (kernel / kernel.sum()).astype(np.float32), padding)
    rows = np.asarray(rows, dtype=int)
    predicted = blurred[rows] if aligned else 0.5 * (blurred[rows] + blurred[rows + 1])
    return float(np.mean(np.abs(predicted - affine.normalise(even[rows]))))


def rl_candidates(psf: np.ndarray, iterations: Sequence[int] = DEFAULT_ITERATIONS,
                  padding: str = "zeros") -> list[Candidate]:
    """Richardson-Lucy (:class:`~.predict.RLDeconvolver`) with ``psf`` at each count, named ``"rl K"``."""
    return [Candidate(f"rl {k}", RLDeconvolver(psf, int(k), padding=padding), iterations=int(k))
            for k in iterations]


def choose(scores: Mapping[str, float], model: str | None = None, trained_on: bool = False,
           margin: float = MODEL_MARGIN) -> str:
    """The candidate with the lowest score; if that is ``model`` and ``trained_on``, it must also be below
    ``(1 - margin)`` times the best other score, else the best other candidate is chosen."""
    if not scores:
        raise ValueError("no candidate to choose from")
    best = min(scores, key=lambda name: scores[name])
    if best == model and trained_on and len(scores) > 1:
        runner_up = min((n for n in scores if n != model), key=lambda name: scores[name])
        if not scores[model] < (1 - margin) * scores[runner_up]:
            return runner_up
    return best


def self_check(volume: np.ndarray, candidates: Sequence[Candidate], psf: np.ndarray, affine: Affine, *,
               padding: str = "reflect", held_out: int = 0, model: str | None = None,
               trained_on: bool = False, margin: float = MODEL_MARGIN) -> SelfCheck:
    """Score every candidate on ``volume`` (module docstring) and choose one.

    Parameters
    ----------
    volume
        ZYX, at least 4 slices, in the units the candidates take.
    candidates
        The methods, each with a unique name.
    psf
        The PSF at twice the volume's z spacing (the loss's PSF of a model).
    affine
        The normalisation of the scores (the model's).
    padding
        Boundary rule of the re-blurring (:data:`REBLUR_PADDING`; the model's loss's).
    held_out
        Raw slices at the end of the volume the model never trained on (scored alone if > 0).
    model
        The name of the model candidate, if any.
    trained_on
        The model trained on the slices scored (:func:`choose` then asks for ``margin``).
    margin
        See :data:`MODEL_MARGIN`.
    """
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}")
    odd, even = split_volume(volume)
    rows = scored_rows(np.asarray(volume).shape[0], held_out)
    scores = {}
    for candidate in candidates:
        _, deconvolved = candidate.method(np.ascontiguousarray(odd))
        scores[candidate.name] = reblur_error(deconvolved, even, psf, rows, affine=affine, padding=padding,
                                              aligned=candidate.aligned)
    trained_on = trained_on and model in scores
    return SelfCheck(scores=scores, choice=choose(scores, model, trained_on, margin),
                     rows=(int(2 * rows[0] + 1), int(2 * rows[-1] + 1)), held_out=held_out > 0,
                     trained_on=trained_on, margin=margin)
