"""Fuzz caffeport's readers with mutated real Caffe files (issue 6).

Every input is a real file from the shared test models (caffemodels, HDF5
snapshots, prototxts, binaryproto means) plus a few synthetic seeds in the
encodings no shared file uses (V0, unpacked floats, double_data, fp16), with
one to four mutations stacked on it: bit flips, interesting bytes, inserted,
deleted, duplicated or spliced ranges, truncation, protobuf-aware tampering
(a length, a tag, a dimension or another varint re-encoded as 0, +-1, 2^31,
2^63, 2^64-1, an 11-byte varint, ...) and, for prototxts, token edits. With
``--engine atheris`` (``pip install atheris``) libFuzzer's coverage-guided
loop mutates and drives the inputs instead, in this process.

Each input is written to a scratch file and read by a worker process with the
entry point a user would hit (``caffeport.read`` for weights and prototxts,
``caffeport.read_blob`` for means; ``--deep`` also transforms, describes and
exports what was read). The result is one of:

- clean: a valid `Net`/array, or a `CaffeportError` subclass;
- crash: any other exception (also `InternalDecodeError`, the read entry's
  guard against unchecked input, which counts as a bug), a `MemoryError`
  under the worker's address-space limit, or the worker dying (segfault);
- hang: no answer within ``--timeout`` seconds (the worker is killed);
- memory: the worker's peak RSS grew past ``--rss-limit-mb`` above its baseline.

Crashes, hangs and memory findings are saved (input, and a ``.txt`` with the
traceback) under ``--crash-dir``, deduplicated by exception type and raising
line. Replay one with ``--replay FILE --kind KIND``.

    python benchmarks/fuzz.py --inputs 100000 --seconds 900
    python benchmarks/fuzz.py --engine atheris --seconds 600
    python benchmarks/fuzz.py --replay /tmp/caffeport-fuzz/crash-....bin --kind caffemodel
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import re
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from caffeport.readers.wire import encode_delimited as _ld
from caffeport.readers.wire import encode_key as _key
from caffeport.readers.wire import encode_varint as _varint

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ROOT.parent / "shared" / "caffe-models"
KINDS = ("caffemodel", "h5", "binaryproto", "prototxt")
SUFFIX = {"caffemodel": ".caffemodel", "h5": ".caffemodel.h5", "binaryproto": ".binaryproto", "prototxt": ".prototxt"}

# --------------------------------------------------------------------------
# Seeds


@dataclass
class Seed:
    name: str
    kind: str
    data: bytes
    #: a matching file of the other kind (prototxt for a caffemodel and the reverse), read unmutated
    partner: Path | None = None
    #: protobuf positions found by walking the seed: (start, end, role) of varints
    varints: list[tuple[int, int, str]] = field(default_factory=list)


def _synthetic_seeds() -> list[Seed]:
    """Encodings no shared model uses: V0 nesting, unpacked floats, double_data, fp16 raw_data, legacy dims."""
    floats = struct.pack("<6f", 0.5, -1.0, 2.0, 3.5, 0.0, 1e-3)
    shape = _ld(7, _key(1, 0) + _varint(2) + _key(1, 0) + _varint(3))
    unpacked = shape + b"".join(_key(5, 5) + floats[i : i + 4] for i in range(0, 24, 4))
    double = shape + _ld(8, struct.pack("<6d", 1, 2, 3, 4, 5, 6))
    unpacked_double = shape + b"".join(_key(8, 1) + struct.pack("<d", v) for v in range(6))
    fp16 = shape + _key(10, 0) + _varint(2) + _ld(12, struct.pack("<6e", 1, 2, 3, 4, 5, 6))
    legacy = b"".join(_key(n, 0) + _varint(d) for n, d in zip((1, 2, 3, 4), (1, 1, 2, 3))) + _ld(5, floats)

    def v2(name: str, type_: str, *blobs: bytes) -> bytes:
        return _ld(100, _ld(1, name.encode()) + _ld(2, type_.encode()) + _ld(3, b"data") + _ld(4, name.encode())
                   + b"".join(_ld(7, b) for b in blobs))

    v2_net = (_ld(1, b"synthetic") + _ld(100, _ld(1, b"data") + _ld(2, b"Input") + _ld(4, b"data")
                                         + _key(143, 2) + _varint(6) + _ld(1, _ld(1, b"\x01\x03\x02\x03")))
              + v2("ip_unpacked", "InnerProduct", unpacked, _ld(7, _key(1, 0) + _varint(2)) + _ld(5, b"\0" * 8))
              + v2("ip_double", "InnerProduct", double) + v2("ip_udouble", "InnerProduct", unpacked_double)
              + v2("ip_fp16", "InnerProduct", fp16) + v2("conv", "Convolution", legacy))
    conv_v0 = (_ld(1, b"conv1") + _ld(2, b"conv") + _key(3, 0) + _varint(2) + _key(8, 0) + _varint(1)
               + _ld(50, legacy))
    v0_net = (_ld(1, b"v0") + _ld(3, b"data") + b"".join(_key(4, 0) + _varint(d) for d in (1, 3, 4, 4))
              + _ld(2, _ld(1, _ld(1, b"pad1") + _ld(2, b"padding") + _key(7, 0) + _varint(1))
                    + _ld(2, b"data") + _ld(3, b"pad1"))
              + _ld(2, _ld(1, conv_v0) + _ld(2, b"pad1") + _ld(3, b"conv1")))
    v1_net = _ld(1, b"v1") + _ld(2, _ld(4, b"ip") + _key(5, 0) + _varint(14) + _ld(2, b"data") + _ld(3, b"ip")
                                 + _ld(6, legacy))
    return [Seed("synthetic-v2", "caffemodel", v2_net), Seed("synthetic-v0", "caffemodel", v0_net),
            Seed("synthetic-v1", "caffemodel", v1_net), Seed("synthetic-blob", "binaryproto", unpacked)]


def _partner(model: Path) -> Path | None:
    texts = sorted(model.parent.glob("*.prototxt"))
    deploy = [p for p in texts if "train" not in p.name and "solver" not in p.name]
    return (deploy or texts or [None])[0]


def load_seeds(models: Path, max_bytes: int) -> list[Seed]:
    """The shared files up to ``max_bytes`` (the smallest of each kind always), plus the synthetic seeds."""
    if not (models / "MANIFEST.md").is_file():
        raise SystemExit(f"fuzz.py: the shared Caffe models are missing: expected them at {models}")
    seeds: list[Seed] = []
    by_kind: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    for path in sorted(models.rglob("*")):
        name = path.name
        kind = ("h5" if name.endswith(".caffemodel.h5") else "caffemodel" if name.endswith(".caffemodel")
                else "binaryproto" if name.endswith(".binaryproto") else "prototxt" if name.endswith(".prototxt")
                else None)
        if kind is not None:
            by_kind[kind].append(path)
    for kind, paths in by_kind.items():
        paths.sort(key=lambda p: p.stat().st_size)
        for i, path in enumerate(paths):
            if i and path.stat().st_size > max_bytes:
                continue
            partner = _partner(path) if kind in ("caffemodel", "h5") else None
            if kind == "prototxt":
                models_beside = sorted(path.parent.glob("*.caffemodel"))
                partner = models_beside[0] if models_beside else None
            seeds.append(Seed(str(path.relative_to(models)), kind, path.read_bytes(), partner))
    seeds += _synthetic_seeds()
    for seed in seeds:
        if seed.kind in ("caffemodel", "binaryproto"):
            seed.varints = _walk(seed.data, 0, len(seed.data), 0)
    return seeds


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    result = shift = 0
    for i in range(10):
        if pos + i >= end:
            return None
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    return None


def _walk(data: bytes, start: int, end: int, depth: int) -> list[tuple[int, int, str]]:
    """Positions of tags, lengths and varint values, recursing into payloads that parse as messages."""
    found: list[tuple[int, int, str]] = []
    pos = start
    while pos < end and len(found) < 20000:
        tag = _read_varint(data, pos, end)
        if tag is None:
            return found
        key, after = tag
        found.append((pos, after, "tag"))
        wire = key & 7
        if wire == 0:
            value = _read_varint(data, after, end)
            if value is None:
                return found
            found.append((after, value[1], "value"))
            pos = value[1]
        elif wire == 2:
            length = _read_varint(data, after, end)
            if length is None or length[1] + length[0] > end:
                return found
            found.append((after, length[1], "length"))
            payload = length[1]
            if depth < 8 and length[0] > 1:
                inner = _walk(data, payload, payload + length[0], depth + 1)
                if (inner and inner[-1][1] == payload + length[0]) or len(inner) > 2:
                    found += inner
            pos = payload + length[0]
        elif wire == 5:
            pos = after + 4
        elif wire == 1:
            pos = after + 8
        else:
            return found
    return found


# --------------------------------------------------------------------------
# Mutations

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x3A, 0x08)
INTERESTING_INTS = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53,
                    2**62, 2**63 - 1, 2**63, 2**64 - 1, 10**12)
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[-+]?[0-9][0-9A-Za-z.+-]*|\S')
TEXT_TOKENS = (b"{", b"}", b"<", b">", b"[", b"]", b":", b",", b"layer", b"layers", b"input_dim", b"name", b"top",
               b"bottom", b"-1", b"0", b"1e999", b"-1e999", b"nan", b"inf", b"99999999999999999999999", b"0x7fffffff",
               b"4294967296", b"'\\xff\\xfe'", b'"\\377"', b'"a/../../b"', b"include { phase: TRAIN }", b"#",
               b"convolution_param { num_output: 0 kernel_size: 0 }", b"reshape_param { shape { dim: -1 dim: -1 } }",
               b"input_param { shape { dim: 99999999999 dim: 99999999999 } }", b"\xff", b"\x00", b"\xc3\x28",
               b"layer {" * 120)


class Mutator:
    def __init__(self, rng: random.Random, seeds: list[Seed]) -> None:
        self.rng = rng
        self.seeds = seeds
        self.binary_ops: list[Callable[[bytearray, Seed], bytearray]] = [
            self.flip, self.flip, self.interesting_byte, self.insert, self.delete, self.duplicate, self.truncate,
            self.splice, self.varint_tamper, self.varint_tamper, self.varint_tamper, self.varint_tamper,
        ]
        self.text_ops: list[Callable[[bytearray, Seed], bytearray]] = [
            self.token_edit, self.token_edit, self.token_edit, self.token_edit, self.flip, self.insert, self.delete,
            self.truncate, self.duplicate,
        ]

    def mutate(self, seed: Seed) -> bytes:
        data = bytearray(seed.data)
        ops = self.text_ops if seed.kind == "prototxt" else self.binary_ops
        for _ in range(self.rng.choice((1, 1, 1, 2, 2, 3, 4))):
            data = self.rng.choice(ops)(data, seed)
        return bytes(data)

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data)) if data else 0

    def flip(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            for _ in range(self.rng.choice((1, 1, 2, 8))):
                data[self._pos(data)] ^= 1 << self.rng.randrange(8)
        return data

    def interesting_byte(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            data[self._pos(data)] = self.rng.choice(INTERESTING_BYTES)
        return data

    def insert(self, data: bytearray, seed: Seed) -> bytearray:
        n = self.rng.choice((1, 2, 4, 16))
        data[self._pos(data) : self._pos(data)] = self.rng.randbytes(n)
        return data

    def delete(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            start = self._pos(data)
            del data[start : start + self.rng.choice((1, 2, 4, 64, 1024))]
        return data

    def duplicate(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            start = self._pos(data)
            chunk = data[start : start + self.rng.choice((1, 8, 64, 4096))]
            at = self._pos(data)
            data[at:at] = chunk * self.rng.choice((1, 1, 2, 50))
        return data

    def truncate(self, data: bytearray, seed: Seed) -> bytearray:
        return data[: self._pos(data)]

    def splice(self, data: bytearray, seed: Seed) -> bytearray:
        other = self.rng.choice([s for s in self.seeds if s.kind == seed.kind] or [seed]).data
        if not data or not other:
            return data
        return data[: self._pos(data)] + other[self.rng.randrange(len(other)) :]

    def varint_tamper(self, data: bytearray, seed: Seed) -> bytearray:
        """Re-encode a tag, length or value of the original seed (only valid while the seed is unchanged)."""
        if not seed.varints or len(data) != len(seed.data):
            return self.flip(data, seed)
        start, end, role = self.rng.choice(seed.varints)
        old = _read_varint(bytes(data), start, end)
        value = old[0] if old else 0
        if role == "tag":
            choice = self.rng.randrange(4)
            new = (value & ~7 | self.rng.randrange(8) if choice == 0 else
                   (self.rng.choice((1, 2, 5, 7, 50, 100, 2**29 - 1, 2**29, 2**40)) << 3) | (value & 7) if choice == 1
                   else self.rng.choice(INTERESTING_INTS))
        else:
            delta = self.rng.choice((-1, 1, -4, 4))
            new = self.rng.choice((*INTERESTING_INTS, max(value + delta, 0), value * 2, 2**64 - 1 - value))
        encoded = _varint(new & ((1 << 64) - 1))  # a doubled value wraps to 64 bits, as a field would
        if self.rng.random() < 0.1:  # overlong encodings: protobuf allows padding up to 10 bytes, not 11
            encoded = bytes(b | 0x80 for b in encoded) + b"\x80" * self.rng.choice((0, 5, 9)) + b"\x00"
        data[start:end] = encoded
        return data

    def token_edit(self, data: bytearray, seed: Seed) -> bytearray:
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(data)]
        if not tokens:
            return bytearray(self.rng.choice(TEXT_TOKENS)) + data
        start, end = self.rng.choice(tokens)
        op = self.rng.randrange(5)
        if op == 0:  # delete a token
            del data[start:end]
        elif op == 1:  # replace it
            data[start:end] = self.rng.choice(TEXT_TOKENS)
        elif op == 2:  # duplicate it
            data[end:end] = b" " + data[start:end]
        elif op == 3:  # insert a token before it
            data[start:start] = self.rng.choice(TEXT_TOKENS) + b" "
        else:  # swap with another token of the file
            s2, e2 = self.rng.choice(tokens)
            if e2 <= start or s2 >= end:
                first, second = sorted([(start, end), (s2, e2)])
                a, b = bytes(data[first[0] : first[1]]), bytes(data[second[0] : second[1]])
                data[second[0] : second[1]] = a
                data[first[0] : first[1]] = b
        return data


# --------------------------------------------------------------------------
# The worker: reads one input at a time


def classify(exc: BaseException) -> str | None:
    """None for a clean outcome, else what kind of finding ``exc`` is."""
    from caffeport.errors import CaffeportError, InternalDecodeError

    if isinstance(exc, InternalDecodeError):
        return "crash"
    if isinstance(exc, CaffeportError):
        return None
    return "crash"


def run_target(kind: str, path: Path, partner: Path | None, mode: int, deep: bool, scratch: Path) -> str:
    """Read ``path`` as a user would; returns a short description of the valid result."""
    import numpy as np

    import caffeport

    if kind == "binaryproto" or (kind == "caffemodel" and mode == 3):
        blob = caffeport.read_blob(path)
        return f"blob {blob.shape}"
    if kind == "prototxt":
        net = caffeport.read(partner if mode == 1 and partner else None, path)
    elif mode == 1 and partner is not None:
        net = caffeport.read(path, partner)
    else:
        net = caffeport.read(path)
    for layer in net:
        for blob in layer.blobs:
            assert isinstance(blob, np.ndarray)
    if deep:
        from caffeport.conversion import convert
        from caffeport.describe import table, to_json

        table(net)
        to_json(net)
        out = scratch / "out.h5"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        if kind != "prototxt":
            convert(path, partner if mode == 1 else None, out, backend=("tensorflow", "torch", "caffe")[mode % 3],
                    force=True)
    return f"net of {len(net.layers)} layers"


def _finding_key(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "caffeport" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker_main(conn: Connection, address_limit_mb: int, deep: bool) -> None:
    import resource

    if address_limit_mb:
        limit = address_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import caffeport  # noqa: F401  (import once, before the first timed input)

    scratch = Path(tempfile.mkdtemp(prefix="caffeport-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    baseline = _vmhwm_mb()
    conn.send(("ready", baseline))
    while True:
        message = conn.recv()
        if message is None:
            break
        kind, data, partner, mode = message
        path = scratch / f"input{SUFFIX[kind]}"
        path.write_bytes(data)
        try:
            detail = run_target(kind, path, Path(partner) if partner else None, mode, deep, scratch)
            conn.send(("ok", detail, "", _vmhwm_mb()))
        except BaseException as exc:
            finding = "memory" if isinstance(exc, MemoryError) else classify(exc)
            if finding is None:
                conn.send(("error", type(exc).__name__, "", _vmhwm_mb()))
            else:
                conn.send((finding, _finding_key(exc), traceback.format_exc(), _vmhwm_mb()))
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()


class Worker:
    def __init__(self, address_limit_mb: int, deep: bool) -> None:
        self.address_limit_mb = address_limit_mb
        self.deep = deep
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, self.address_limit_mb, self.deep), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(120):
            raise SystemExit("fuzz.py: the worker did not start")
        _, self.baseline = self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def run(self, message: tuple[str, bytes, str | None, int], timeout: float) -> tuple[str, str, str, float]:
        try:
            self.conn.send(message)
            if self.conn.poll(timeout):
                return self.conn.recv()  # type: ignore[no-any-return]
            self.kill()
            self.start()
            return ("hang", "hang", f"no answer within {timeout} s", 0.0)
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            code = self.process.exitcode
            self.conn.close()
            self.start()
            return ("crash", f"worker-died-{code}", f"the worker process died (exit code {code})", 0.0)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.kill()


# --------------------------------------------------------------------------
# The loop


@dataclass
class Stats:
    tried: int = 0
    valid: int = 0
    clean_errors: int = 0
    crashes: int = 0
    hangs: int = 0
    memory: int = 0
    by_error: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0


def _save(crash_dir: Path, finding: str, key: str, kind: str, data: bytes, report: str, seed: str) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", key)
    path = crash_dir / f"{finding}-{kind}-{safe}-{digest}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(f"seed: {seed}\nkind: {kind}\nkey: {key}\n\n{report}")
    return path


def fuzz(args: argparse.Namespace) -> Stats:
    rng = random.Random(args.seed)
    seeds = load_seeds(args.models, args.max_seed_bytes)
    mutator = Mutator(rng, seeds)
    print(f"{len(seeds)} seeds ({', '.join(f'{k}: {sum(s.kind == k for s in seeds)}' for k in KINDS)})", flush=True)
    worker = Worker(args.address_limit_mb, args.deep)
    stats = Stats()
    start = time.monotonic()
    last_report = start
    try:
        while stats.tried < args.inputs and time.monotonic() - start < args.seconds:
            seed = rng.choice(seeds)
            data = mutator.mutate(seed)
            mode = rng.randrange(4)
            partner = str(seed.partner) if seed.partner else None
            outcome, key, report, rss = worker.run((seed.kind, data, partner, mode), args.timeout)
            stats.tried += 1
            stats.peak_rss_mb = max(stats.peak_rss_mb, rss - worker.baseline)
            if outcome == "ok":
                stats.valid += 1
            elif outcome == "error":
                stats.clean_errors += 1
                stats.by_error[key] = stats.by_error.get(key, 0) + 1
            if outcome in ("ok", "error") and rss - worker.baseline > args.rss_limit_mb:
                outcome, key, report = "memory", "rss", f"peak RSS {rss - worker.baseline:.0f} MB above baseline"
                worker.kill()
                worker.start()
            if outcome in ("crash", "hang", "memory"):
                setattr(stats, {"crash": "crashes", "hang": "hangs", "memory": "memory"}[outcome],
                        getattr(stats, {"crash": "crashes", "hang": "hangs", "memory": "memory"}[outcome]) + 1)
                first = key not in stats.findings
                stats.findings[key] = stats.findings.get(key, 0) + 1
                if first:
                    saved = _save(args.crash_dir, outcome, key, seed.kind, data, report, seed.name)
                    print(f"  {outcome}: {key} (seed {seed.name}, mode {mode}) -> {saved}", flush=True)
            now = time.monotonic()
            if now - last_report > args.report_every:
                last_report = now
                print(f"  {stats.tried} inputs in {now - start:.0f} s: {stats.valid} valid, {stats.clean_errors} "
                      f"clean errors, {stats.crashes} crashes, {stats.hangs} hangs, {stats.memory} memory",
                      flush=True)
    finally:
        worker.close()
    stats_seconds = time.monotonic() - start
    print(f"\n{stats.tried} inputs in {stats_seconds:.1f} s ({stats.tried / max(stats_seconds, 1e-9):.0f}/s): "
          f"{stats.valid} valid results, {stats.clean_errors} clean CaffeportErrors, {stats.crashes} crashes, "
          f"{stats.hangs} hangs, {stats.memory} memory findings; worker peak RSS +{stats.peak_rss_mb:.0f} MB")
    print("clean errors by type: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_error.items())))
    if stats.findings:
        print("distinct findings: " + ", ".join(f"{k} x{v}" for k, v in sorted(stats.findings.items())))
    return stats


# --------------------------------------------------------------------------
# Coverage-guided: atheris drives a child process


def atheris_child(args: argparse.Namespace) -> None:
    import atheris

    with atheris.instrument_imports():
        import caffeport
        import caffeport.readers  # noqa: F401
    kinds = KINDS
    seeds = load_seeds(args.models, args.max_seed_bytes)
    partners = {kind: next((s.partner for s in seeds if s.kind == kind and s.partner), None) for kind in kinds}
    scratch = Path(tempfile.mkdtemp(prefix="caffeport-atheris-"))
    args.crash_dir.mkdir(parents=True, exist_ok=True)
    print(f"corpus and scratch files: {scratch}; findings: {args.crash_dir}", flush=True)
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        kind = kinds[data[0] % len(kinds)]
        mode = data[1] % 4
        path = scratch / f"input{SUFFIX[kind]}"
        path.write_bytes(data[2:])
        try:
            run_target(kind, path, partners[kind], mode, False, scratch)
        except BaseException as exc:
            finding = "memory" if isinstance(exc, MemoryError) else classify(exc)
            if finding is not None:
                key = _finding_key(exc)
                if key not in seen:
                    seen.add(key)
                    saved = _save(args.crash_dir, finding, key, kind, data[2:], traceback.format_exc(), "atheris")
                    print(f"  {finding}: {key} -> {saved}", flush=True)

    corpus = scratch / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(bytes([kinds.index(seed.kind), 0]) + seed.data)
    flags = [sys.argv[0], str(corpus), f"-runs={args.inputs}", f"-max_total_time={int(args.seconds)}",
             f"-timeout={int(args.timeout)}", f"-rss_limit_mb={args.address_limit_mb}", "-print_final_stats=1",
             f"-max_len={args.max_seed_bytes + 2}", f"-seed={args.seed or 1}",
             f"-artifact_prefix={args.crash_dir}/"]
    atheris.Setup(flags, one_input)
    atheris.Fuzz()


def replay(args: argparse.Namespace) -> int:
    data = Path(args.replay).read_bytes()
    scratch = Path(tempfile.mkdtemp(prefix="caffeport-replay-"))
    path = scratch / f"input{SUFFIX[args.kind]}"
    path.write_bytes(data)
    partner = Path(args.partner) if args.partner else None
    for mode in range(4):
        try:
            print(f"mode {mode}: {run_target(args.kind, path, partner, mode, args.deep, scratch)}")
        except BaseException as exc:
            print(f"mode {mode}: {classify(exc) or 'clean'}: {type(exc).__name__}: {exc}")
            if classify(exc):
                traceback.print_exc()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="stop after this many inputs")
    parser.add_argument("--seconds", type=float, default=900.0, help="stop after this many seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take before it is a hang")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same inputs)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="the shared caffe-models directory")
    parser.add_argument("--max-seed-bytes", type=int, default=2_000_000,
                        help="seed files larger than this are left out (the smallest of each kind is always in)")
    parser.add_argument("--crash-dir", type=Path, default=Path(tempfile.gettempdir()) / "caffeport-fuzz")
    parser.add_argument("--address-limit-mb", type=int, default=4096, help="the worker's RLIMIT_AS (0: none)")
    parser.add_argument("--rss-limit-mb", type=float, default=512.0, help="peak RSS growth that counts as a finding")
    parser.add_argument("--deep", action="store_true", help="also describe, transform and export what was read")
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--replay", help="read one saved input and print what happens")
    parser.add_argument("--kind", choices=KINDS, default="caffemodel", help="with --replay: how to read it")
    parser.add_argument("--partner", help="with --replay: the prototxt (or caffemodel) read with it in modes 1")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args.replay:
        return replay(args)
    if args.engine == "atheris":
        atheris_child(args)
        return 0
    stats = fuzz(args)
    return 1 if stats.crashes or stats.hangs or stats.memory else 0


if __name__ == "__main__":
    sys.exit(main())
