"""`Detector`: what an edge app embeds. Load a bundle, score images, decide ID / OOD.

    from dlsr_deploy.runtime import Detector
    with Detector.load("export/cifar10-fp16", backend="auto") as det:
        out = det.predict(images)          # uint8 [N, H, W, 3]
        out["score"], out["normalized"], out["is_ood"]

Scores: higher = more OOD. `normalized` is 0 at the median ID score and 1.0 at the
calibrated threshold; `is_ood` = score > threshold.

Pay for what you read: `score()` and `predict()` compute only the scores asked for (default:
the headline, which makes the decision) and run only the graphs those need. A bundle's density
heads have their own small graph (`heads.onnx`, z0 -> heads), so a density headline costs the
backbone plus one MatMul; `scores="all"` (or a list naming a DLSR score) runs the denoiser too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from dlsr_deploy.errors import BackendUnavailable, BundleError, InputError
from dlsr_deploy.manifest import Manifest, read_manifest
from dlsr_deploy.preprocess import as_batch
from dlsr_deploy.runtime.backend import OpenOptions, open_backend, pick_backend, release_heap

ScoresArg = Union[None, str, Sequence[str]]


def backend_choices() -> List[str]:
    """'auto' and every registered backend (the CLI's --backend choices)."""
    from dlsr_deploy.registry import backend_names

    return ["auto", *backend_names()]


def _reopen(bundle: str, kwargs: dict) -> "Detector":
    return Detector.load(bundle, **kwargs)


def _check_load_args(backend: str, max_batch, self_check: str) -> None:
    from dlsr_deploy.runtime.selfcheck import MODES

    if backend not in backend_choices():
        raise BackendUnavailable(f"backend: expected one of {backend_choices()}, got {backend!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise InputError(f"max_batch: expected a positive integer, got {max_batch!r}")
    if self_check not in MODES:
        raise InputError(f"self_check: expected one of {list(MODES)}, got {self_check!r}")


def _read_checked(bundle, verify: bool, trusted_keys, allow_failed_parity: bool, expect_digest) -> Manifest:
    """The manifest with every file held open (one bundle, whatever happens to the folder later)."""
    m = read_manifest(Path(bundle), verify=verify, trusted_keys=trusted_keys, hold=True)
    try:
        _check_read(m, allow_failed_parity, expect_digest)
    except BaseException:
        m.close()
        raise
    return m


def _check_read(m: Manifest, allow_failed_parity: bool, expect_digest) -> None:
    if expect_digest is not None and m.data.get("digest") != expect_digest:
        raise BundleError(
            f"bundle {m.name} at {m.path} is not the bundle this Detector was loaded from (digest "
            f"{str(m.data.get('digest'))[:19]}..., expected {str(expect_digest)[:19]}...): the folder was re-exported "
            "or a symlink to it switched since; load it again to use the new one"
        )
    if not m.parity_passed and not allow_failed_parity:
        raise BundleError(
            f"bundle {m.name} failed its parity check at export ({'; '.join(m.parity_failures)[:300]}); it is kept "
            "only for inspection (dlsr-inspect). Re-export it, or pass allow_failed_parity=True to load it anyway"
        )
    return m


def _open_chosen(m: Manifest, backend: str, opts: OpenOptions):
    """(backend instance, chunk, chosen name, auto's verdict or None)."""
    if backend != "auto" and backend not in m.backends:
        raise BackendUnavailable(
            f"bundle {m.name} ({m.precision}) is for {m.backends}, not {backend!r} (see its manifest's "
            "'backends'; e.g. 8-bit bundles run on ONNX Runtime, not TensorRT)"
        )
    chosen = pick_backend(m.backends) if backend == "auto" else backend
    if opts.cuda_graphs and chosen != "trt":
        raise BackendUnavailable(f"cuda_graphs=True needs the TensorRT backend, got {chosen!r}")
    choice = kept = None
    if backend == "auto" and not opts.fused:
        from dlsr_deploy.registry import backend_spec
        from dlsr_deploy.runtime.autoselect import choose_cpu_backend

        if backend_spec(chosen).cpu_candidate:  # a CPU: the faster candidate here, measured once
            choice, kept = choose_cpu_backend(m, lambda n: open_backend(n, m, opts), opts.threads)
            chosen = choice["choice"]
    impl, chunk = kept or open_backend(chosen, m, opts)
    return impl, chunk, chosen, choice


def _warn_unverified_target(m: Manifest) -> None:
    """A bundle whose precision was not verified on this CPU architecture says so (the
    self-check still decides whether it runs)."""
    import platform
    import warnings

    targets = m.verified_targets
    arch = platform.machine().lower()
    if targets and not any(arch in t for t in targets):
        warnings.warn(
            f"bundle {m.name} ({m.precision}) was verified on {targets}, not on {arch}; its load-time self-check "
            "decides whether it runs here",
            RuntimeWarning,
            stacklevel=3,
        )


_NOT_LOAD_ARGS = ("cls", "bundle", "resolve_trusted_keys", "family", "is_family", "pick_member")


class Detector:
    """A loaded bundle on one backend: score(), predict(), close(); see the module docstring."""

    def __init__(self, manifest: Manifest, backend, backend_name: str, max_batch: int, resize: bool = True):
        self.manifest = manifest
        self.backend = backend
        self.backend_name = backend_name
        self.max_batch = max_batch
        self.resize = resize
        self.size = manifest.native_size
        thr = manifest.threshold
        self.score_name = thr.score
        self.threshold = thr.value
        self.center, self.scale = thr.center, thr.scale
        self.self_check_report = None
        self.backend_choice = None
        self.family_choice = None  # a bundle family: which member was loaded and why not the others
        self._load_args = None

    @classmethod
    def load(
        cls,
        bundle,
        backend: str = "auto",
        *,
        max_batch: Optional[int] = None,
        strict_providers: bool = False,
        provider_options: Optional[dict] = None,
        threads: Optional[int] = None,
        fused: bool = False,
        resize: bool = True,
        verify: bool = True,
        engines_dir: Optional[Path] = None,
        build: bool = True,
        cuda_graphs: bool = False,
        trusted_keys: Optional[list] = None,
        self_check: str = "auto",
        allow_failed_parity: bool = False,
        expect_digest: Optional[str] = None,
    ) -> "Detector":
        """Open a bundle on a backend: 'auto' or a registered name ('trt', 'ort-cuda', 'ort-cpu',
        'openvino', ...; `dlsr_deploy.registry`).

        'auto': the first usable GPU backend the bundle lists, else the faster of the CPU
        candidates on this machine (measured on the golden set the first time, verdict cached;
        `det.backend_choice` holds the timings). max_batch: the largest batch one backend call
        gets (larger inputs are split; default: the registry's chunk for the backend, or the
        bundle's profile maximum on a GPU). cuda_graphs: TensorRT only, one CUDA graph per batch
        size. trusted_keys: Ed25519 public keys (PEM paths or bytes); the bundle must be signed
        by one of them; None = no signature required, an empty list is an error. self_check:
        'auto' replays the bundle's golden set the first time it meets this machine + backend +
        library versions (verdict cached, authenticated), 'always' every load, 'never' skips it;
        a failure raises ParityError naming the platform. A bundle whose export failed parity is
        refused unless allow_failed_parity=True. expect_digest: refuse any other bundle than the
        one with this manifest digest (what a pickled Detector re-opens with). A bundle family
        (`dlsr-export --precision fp32,bf16,int8`, a folder with family.json) opens the fastest member
        verified for this machine (`runtime/family.py`; `det.family_choice` says which and why).

        Every file of the bundle is read and verified at load and held open: whatever happens to
        the folder afterwards (a file replaced, a re-export, a switched symlink), this Detector runs
        what it verified, or refuses in one line. trusted_keys=None reads $DLSR_TRUSTED_KEYS (see
        `dlsr_deploy.signing.trusted_keys_from_env`), so an edge image can make signatures mandatory."""
        from dlsr_deploy.runtime.family import is_family, pick_member
        from dlsr_deploy.signing import resolve_trusted_keys

        family = None  # a family: several precisions of one run, the fastest this machine was verified for
        if is_family(bundle):
            bundle, family = pick_member(bundle, backend)
        trusted_keys = resolve_trusted_keys(trusted_keys)  # key bytes: a pickled Detector needs no paths
        kwargs = {k: v for k, v in locals().items() if k not in _NOT_LOAD_ARGS}
        _check_load_args(backend, max_batch, self_check)
        m = _read_checked(bundle, verify, trusted_keys, allow_failed_parity, expect_digest)
        try:
            det = cls._open(m, backend, kwargs)
        except BaseException:
            m.close()
            raise
        kwargs["expect_digest"] = m.data.get("digest")  # a pickled copy re-opens this bundle or refuses
        det.family_choice, det._load_args = family, (str(Path(bundle).resolve()), kwargs)
        return det

    @classmethod
    def _open(cls, m: Manifest, backend: str, kwargs: dict) -> "Detector":
        """The backend (auto's choice), the self-check, the Detector."""
        k = kwargs
        _warn_unverified_target(m)
        opts = OpenOptions(
            k["threads"], k["max_batch"], k["provider_options"], k["strict_providers"], k["fused"],
            k["engines_dir"], k["build"], k["cuda_graphs"],
        )  # fmt: skip
        impl, chunk, chosen, choice = _open_chosen(m, backend, opts)
        release_heap()  # the parsed model copies are freed by now; give their pages back
        try:
            from dlsr_deploy.runtime.selfcheck import self_check as run_check

            report = run_check(m, impl, k["self_check"], chunk=chunk)
        except BaseException:
            impl.close()
            raise
        if report is not None:
            release_heap()
        det = cls(m, impl, chosen, chunk, k["resize"])
        det.self_check_report, det.backend_choice = report, choice
        return det

    def __reduce__(self):
        """Pickling re-opens the bundle in the receiving process (spawn pools, Ray workers)."""
        if getattr(self, "_load_args", None) is None:
            raise InputError("this Detector was not made by Detector.load and cannot be pickled")
        bundle, kwargs = self._load_args
        return (_reopen, (bundle, kwargs))

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend; the Detector refuses further calls."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None
            self.manifest.close()  # the bundle's files, held open since load

    def _check_open(self):
        if self.backend is None:
            raise InputError("this Detector is closed")

    def resolve_scores(self, scores: ScoresArg = None) -> List[str]:
        """The score names a `scores` argument asks for: None or 'headline' -> [headline];
        'all' -> every score of the bundle; a name or a list of names -> those (checked)."""
        names = self.manifest.score_names
        if scores is None or scores == "headline":
            return [self.score_name]
        if scores == "all":
            return list(names)
        wanted = [scores] if isinstance(scores, str) else list(scores)
        unknown = [s for s in wanted if s not in names]
        slim = self.manifest.data.get("slim")
        if unknown and slim:
            raise InputError(
                f"scores: {unknown} not in this slim bundle (dlsr-export --slim left out {slim.get('dropped')}); it "
                f"computes {names}: export without --slim for the others"
            )
        if unknown or not wanted:
            raise InputError(
                f"scores: expected 'headline', 'all' or names among {names}, got {list(wanted) or 'an empty list'}"
            )
        return list(dict.fromkeys(wanted))

    def row_scores(self, scores: ScoresArg = None) -> List[str]:
        """The scores a result row carries (dlsr-score, Ray Data): those asked for, then the headline
        when it is not among them, since the row's `normalized` and `is_ood` are the headline's."""
        names = self.resolve_scores(scores)
        return names if self.score_name in names else [*names, self.score_name]

    def graphs_for(self, scores: ScoresArg = None) -> List[str]:
        """The score graphs that computing `scores` runs after the backbone (the cheapest cover)."""
        return self.manifest.graphs_for(self.resolve_scores(scores))

    def score(self, images, scores: ScoresArg = None) -> Dict[str, np.ndarray]:
        """Per-image scores {name: float32 [N]} for images uint8 [N, H, W, 3] (or one [H, W, 3],
        floats in [0, 1], or a list of paths / PIL images). scores: which (see resolve_scores;
        default the headline); only the graphs they need run. Batches above max_batch are split."""
        self._check_open()
        names = self.resolve_scores(scores)
        graphs = self.manifest.graphs_for(names)
        batch = as_batch(images, self.size, self.resize)
        wanted = {self.manifest.output_name(s) for s in names}
        # keep only the scores of each chunk (z0 / z0_hat would hold 4 KB per image until the end)
        parts = [
            {k: v for k, v in self.backend.run(batch[i : i + self.max_batch], graphs).items() if k in wanted}
            for i in range(0, len(batch), self.max_batch)
        ]
        if len(parts) > 1:
            # a call of several chunks: give back the activation pages glibc kept (2-3 ms, under
            # 1 % of such a call; single-chunk calls skip it, where it would cost ~20 % at batch 1)
            release_heap()
        return {s: np.concatenate([p[self.manifest.output_name(s)] for p in parts]).astype(np.float32) for s in names}

    def predict(self, images, scores: ScoresArg = None) -> Dict[str, np.ndarray]:
        """score (the calibrated headline), normalized (1.0 = threshold), is_ood, and each score
        asked for (default: the headline only)."""
        if self.threshold is None:
            raise InputError("this bundle has no calibrated threshold; use score() or re-export with calibration")
        names = self.resolve_scores(scores)
        s = self.score(images, names if self.score_name in names else [self.score_name, *names])
        head = s[self.score_name]
        out = {k: v for k, v in s.items() if k in names}
        out["score"] = head
        out["normalized"] = ((head - self.center) / self.scale).astype(np.float32)
        out["is_ood"] = head > self.threshold
        return out

    def __repr__(self) -> str:
        return f"Detector({self.manifest.name!r}, backend={self.backend_name!r}, precision={self.manifest.precision!r})"
