"""Reading, validating and verifying a bundle's manifest.json: digest, files, signature (stdlib only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from dlsr_deploy.errors import BundleError
from dlsr_deploy.manifest.model import DEFAULT_PROFILE, PRECISIONS, READABLE_SCHEMAS, REQUIRED, Manifest
from dlsr_deploy.names import output_name


def content_digest(data: Dict[str, Any]) -> str:
    """sha256 over the manifest's canonical JSON (sorted keys, no whitespace), without the
    `digest` and `signature` fields themselves: any edit of any other field changes it."""
    import hashlib

    body = {k: v for k, v in data.items() if k not in ("digest", "signature")}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def verify_digest(data: Dict[str, Any], path: Path) -> None:
    """Raise BundleError when manifest.json was edited after export (or has no digest)."""
    got = data.get("digest")
    if got is None:
        raise BundleError(
            f"{path}: no 'digest' field; the manifest is not protected (re-export the bundle with this dlsr-deploy)"
        )
    if got != content_digest(data):
        raise BundleError(
            f"{path}: the manifest was modified after export (its content does not match its digest {str(got)[:19]}...)"
        )


def read_manifest(folder: Path, verify: bool = True, trusted_keys=None, hold: bool = False) -> Manifest:
    """Load and validate a bundle's manifest; with verify, check its digest and every file's
    sha256; with trusted_keys (PEM public keys), require a signature by one of them (and check
    digest and files whatever `verify` says). trusted_keys=None: no signature required; an
    empty list is refused (ConfigError). hold: keep the folder and every file it lists open
    (`Manifest.snapshot`), so `Manifest.read_bytes` returns exactly the files this call verified
    whatever happens to the folder later (a Detector loads with it; `Manifest.close()` releases)."""
    from dlsr_deploy.manifest.snapshot import BundleSnapshot

    folder = Path(folder)
    if folder.name == "manifest.json" and not folder.is_dir():
        folder = folder.parent
    for attempt in range(RETRIES):
        snap = BundleSnapshot(folder)
        try:
            m = _read_snapshot(snap, verify, trusted_keys, hold)
            break
        except BundleError:
            # the folder was swapped while we read it (an export published a new bundle): read the
            # new one from the start; one bundle or the other, never a mix of both
            if attempt + 1 < RETRIES and snap.replaced():
                snap.close()
                continue
            snap.close()
            raise
        except BaseException:
            snap.close()
            raise
    if not hold:
        snap.close()
        m.snapshot = None
    return m


RETRIES = 5  # reads of a bundle folder that was replaced while being read


def _read_snapshot(snap, verify: bool, trusted_keys, hold: bool) -> Manifest:
    folder = snap.folder
    path = folder / "manifest.json"
    try:
        data = json.loads(snap.read_manifest())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{path}: missing key(s) {missing}")
    if data["schema_version"] not in READABLE_SCHEMAS:
        raise BundleError(
            f"{path}: schema version {data['schema_version']}, this dlsr-deploy reads versions "
            f"{list(READABLE_SCHEMAS)}; "
            "re-export the bundle or upgrade"
        )
    signed = trusted_keys is not None
    if signed:
        from dlsr_deploy.signing import check_trusted_keys

        check_trusted_keys(trusted_keys)  # an empty list is an error, never "no check"
    if verify or signed:  # a signature covers the files through the digest: both are always checked
        verify_digest(data, path)  # first: "edited after export" says more than the field it broke
    m = Manifest(folder, data, snapshot=snap)
    if signed:
        from dlsr_deploy.signing import verify_signature

        verify_signature(data, trusted_keys, path)  # a forged field says "not signed by you" first
    try:
        validate(data, path)
    except BundleError as exc:
        if data.get("digest") not in (None, content_digest(data)):  # a field broken by an edit: say both
            field = str(exc).split(": ", 1)[-1]
            raise BundleError(f"{path}: the manifest was modified after export (digest mismatch); {field}") from None
        raise
    if hold:  # every file opened now, through the folder handle: one bundle, whatever comes later
        for info in m.file_entries():
            snap.hold(info["name"])
    if verify or signed:
        verify_files(m)
    return m


def _need(cond: bool, path: Path, what: str, got: Any) -> None:
    if not cond:
        shown = json.dumps(got) if isinstance(got, (str, int, float, list, dict, type(None))) else repr(got)
        raise BundleError(f"{path}: {what}, got {shown[:120]}")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _obj(data: Dict[str, Any], key: str, path: Path) -> dict:
    v = data[key]
    _need(isinstance(v, dict), path, f"'{key}' must be an object", v)
    return v


def validate(data: Dict[str, Any], path: Path) -> None:
    """Every field a consumer reads, with the type it must have (one clear error each)."""
    _need(isinstance(data["name"], str) and data["name"] != "", path, "'name' must be a non-empty string", data["name"])
    files = _obj(data, "files", path)
    _validate_files(files, path)
    native = _obj(data, "preprocessing", path).get("native_size")
    _need(_is_int(native) and native > 0, path, "'preprocessing.native_size' must be a positive integer", native)
    mode = _obj(data, "precision", path).get("mode")
    _need(
        isinstance(mode, str) and mode in PRECISIONS,
        path,
        f"'precision.mode' must be one of {sorted(PRECISIONS)}",
        mode,
    )
    names = _validate_scores(_obj(data, "scores", path), _obj(data, "threshold", path), path)
    prof = data.get("batch_profile", DEFAULT_PROFILE)
    ok = isinstance(prof, dict) and all(_is_int(prof.get(k)) and prof[k] >= 1 for k in ("min", "opt", "max"))
    _need(
        ok and prof["min"] <= prof["opt"] <= prof["max"],
        path,
        "'batch_profile' must have integers 1 <= min <= opt <= max",
        prof,
    )
    _validate_graph_io(files, names, native, path)
    from dlsr_deploy.manifest.schema import check_more

    check_more(data, path, names)


def _validate_files(files: dict, path: Path) -> None:
    _need(len(files) > 0, path, "'files' must name at least one graph", files)
    from dlsr_deploy.manifest.schema import check_file_entry

    for role, f in files.items():
        check_file_entry(f"files.{role}", f, path)
        for io in ("inputs", "outputs"):
            specs = f.get(io, [])
            _need(
                isinstance(specs, list) and all(isinstance(x, dict) for x in specs),
                path,
                f"'files.{role}.{io}' must be a list of objects",
                specs,
            )


def _validate_scores(sc: dict, thr: dict, path: Path) -> List[str]:
    names = sc.get("names")
    _need(
        isinstance(names, list) and names and all(isinstance(n, str) for n in names),
        path,
        "'scores.names' must be a non-empty list of strings",
        names,
    )
    head = sc.get("headline")
    _need(isinstance(head, str) and head in names, path, f"'scores.headline' must be one of {names}", head)
    _need(
        thr.get("value") is None or _is_num(thr["value"]),
        path,
        "'threshold.value' must be a number or null",
        thr.get("value"),
    )
    for key in ("center", "scale"):
        _need(key not in thr or _is_num(thr[key]), path, f"'threshold.{key}' must be a number", thr.get(key))
    score = thr.get("score", head)
    _need(isinstance(score, str) and score in names, path, f"'threshold.score' must be one of {names}", score)
    return names


def _validate_graph_io(files: dict, names: List[str], native: int, path: Path) -> None:
    """Scores named by the manifest exist as graph outputs; the image input has the native size."""
    outputs = {o.get("name") for f in files.values() for o in f.get("outputs", [])}
    if outputs:
        missing = [output_name(n) for n in names if output_name(n) not in outputs]
        _need(not missing, path, f"'scores.names' lists scores no graph outputs ({missing})", sorted(map(str, outputs)))
    for role, f in files.items():
        for spec in f.get("inputs", []):
            shape = spec.get("shape")
            if spec.get("name") == "images" and isinstance(shape, list) and len(shape) == 4:
                _need(
                    shape[1:3] == [native] * 2,
                    path,
                    f"'preprocessing.native_size' ({native}) must match the {role} graph's image input",
                    shape,
                )


def verify_files(m: Manifest) -> Dict[str, str]:
    """{file name: 'ok'}; raises BundleError naming every missing or tampered file. Reads through
    the manifest's snapshot (the files it holds open) when it has one."""
    from dlsr_deploy.manifest.snapshot import BundleSnapshot

    snap = m.snapshot or BundleSnapshot(m.path)
    problems, ok = [], {}
    try:
        for info in m.file_entries():
            try:
                digest, size = snap.sha256(info["name"])
            except BundleError as exc:
                problems.append(str(exc).split(": ", 1)[-1])
                continue
            if size != info.get("bytes", size):
                problems.append(
                    f"{info['name']} has {size} bytes, the manifest says {info['bytes']} (truncated or replaced)"
                )
            elif digest != info["sha256"]:
                problems.append(
                    f"{info['name']} sha256 {digest[:12]}... does not match the manifest's {info['sha256'][:12]}... "
                    "(modified)"
                )
            else:
                ok[info["name"]] = "ok"
    finally:
        if snap is not m.snapshot:
            snap.close()
    if problems:
        raise BundleError(f"{m.path}: " + "; ".join(problems))
    return ok
