"""Training-step efficiency of the headline models: step time, FLOPs, share of the GEMM peak, float32 and bf16.

    python -m benchmarks.training_efficiency                     # CPU, 1 thread, batch 4096
    python -m benchmarks.training_efficiency --ids DNN_criteo RankMixer_criteo --steps 5
    python -m benchmarks.training_efficiency --tiny              # smoke test

For each headline model at its Criteo config (config/model_config/<Model>.yaml; one
in-memory Criteo-shaped FeatureMap of 13 numeric and 26 categorical fields,
``--vocab-size`` ids per field, from fuxictr_ext.testing, and one fixed random batch of
``--batch-size`` rows), the training step is the trainer's own
(:meth:`fuxictr_ext.training.Trainer.train_step`: forward, float32 loss, backward,
gradient clipping, optimizer step) under ``precision`` float32 and bf16
(:mod:`fuxictr_ext.precision`). The two precisions of a model take turns step by step
after ``--warmup`` untimed steps each (``benchmarks.token_mixing_speed.alternate``);
the table gives the median and the minimum of ``--steps`` samples, in CPU seconds of
this process (``--clock cpu``, the steady figure for one thread on a shared machine).

* FLOPs per step: torch's ``FlopCounterMode`` over one float32 training step
  (:func:`fuxictr_ext.cost.count_step_flops`: the matrix products of the forward and
  the backward, 2 FLOPs per multiply-add; elementwise work is not counted).
* Peak: a ``--peak-size``^3 (2048) matmul timed in the same process (float32, and bf16 for
  the bf16 columns), the best of ``--peak-repeats`` before and after the models; "% peak" is
  FLOPs / step time / that rate.
* bf16 / fp32: the ratio of the median step times (< 1: bf16 is faster). ``--precisions
  float32`` leaves bf16 out (on a CPU without bfloat16 matrix instructions, e.g. no
  ``avx512_bf16`` in /proc/cpuinfo, a bf16 matmul runs tens of times slower than float32).
* Where a model's float32 step is below ``--profile-below`` of the peak, one float32 step
  is profiled (``torch.profiler``, CPU) and its ``--top-ops`` operators by self CPU time are
  listed: what stands between the model and the peak.
* ``--release-dir`` (a checkout of github.com/vasile-paskardlgm/RankElastor at 68e5f29): RankMixer
  and RankElastor also run against the authors' release, imported from there at run time
  (``benchmarks.rankelastor_release_equivalence.build_release_model``: their ``UniMixer`` at the
  released config that ours reproduces, its weights copied into ours), float32, train steps
  (the release's FuxiCTR ``BaseModel.train_step`` against our trainer's) and eval forwards
  alternated; "speed-up" = release median / ours. Without it they run against the release's
  form written in this repository (``benchmarks.token_mixing_speed.loop_reference_model``:
  every token's P-FFN a separate small network as the authors' ``Token_FFN.py`` runs it).
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import Harness
from benchmarks.rankelastor_release_equivalence import (CHECKOUT, MODULE_NAME, RELEASE_PACKAGE, build_release_model,
                                                        copy_weights, release_expid)
from benchmarks.releases import load_release_module
from benchmarks.token_mixing_speed import Schedule, alternate, loop_reference_model
from benchmarks.training_speed import headline_configs
from fuxictr_ext.cost import count_step_flops
from fuxictr_ext.precision import PRECISIONS
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch
from fuxictr_ext.training import Trainer, TrainingConfig

HEADLINE_IDS = ("DNN_criteo", "DCNv2_criteo", "WuKong_ME_criteo", "DHEN_ME_criteo", "RoBlock_criteo",
                "RankMixer_criteo", "RankElastor_criteo", "MLCC_criteo", "MCMLCC_criteo_S2")
RELEASE_FORM_MODELS = ("RankMixer", "RankElastor")
PEAK_SIZE = 2048
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bfloat16 matrix instructions
PEAK_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}
RELEASE_FORM_TITLE = ("Float32, ours against the release's form of the same model written in this repository "
                      "(token-loop P-FFNs, benchmarks/token_mixing_speed.py):")
RELEASE_TITLE = (f"Float32, ours against the authors' release ({CHECKOUT}, imported from --release-dir; "
                 "the same weights; train: its FuxiCTR train_step against our trainer's; eval: forward):")


def gemm_peak(dtype: torch.dtype, size: int, repeats: int, cpu: bool) -> float:
    """FLOP/s of the fastest of ``repeats`` ``size``^3 matmuls in ``dtype`` (after one warm-up)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    clock = time.process_time if cpu else time.perf_counter
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b)
        best = min(best, clock() - start)
    return 2 * size ** 3 / best


def build_model(params: dict, feature_map, work_dir: str, seed: int = 0):
    torch.manual_seed(seed)
    params = {**params, "verbose": 0, "model_root": work_dir, "gpu": -1, "metrics": ["logloss", "AUC"]}
    return get_model_class(params["model"])(feature_map, **params)


def step_function(trainer: Trainer, batch: dict) -> Callable[[], None]:
    def step() -> None:
        trainer.train_step(batch)
    return step


def eval_function(model, batch: dict) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(batch)
    return step


def ms(times: Sequence[float]) -> str:
    return f"{1e3 * statistics.median(times):.1f} / {1e3 * min(times):.1f}"


def measure_model(expid: str, params: dict, feature_map, batch: dict, schedule: Schedule, work_dir: str,
                  peaks: Dict[str, float], precisions: Sequence[str]) -> dict:
    """Step times of both precisions (alternated), FLOPs per step, shares of the peaks."""
    model = build_model(params, feature_map, work_dir)
    model.train()
    trainers = {p: Trainer(model, TrainingConfig(precision=p, verbose=0)) for p in precisions}
    flops = count_step_flops(step_function(trainers["float32"], batch))
    times = alternate({p: step_function(t, batch) for p, t in trainers.items()}, schedule)
    record = {"expid": expid, "flops_per_step": flops}
    for precision, samples in times.items():
        median = statistics.median(samples)
        record[precision] = {"median_s": median, "min_s": min(samples),
                             "peak_fraction": flops / median / peaks[precision]}
    if "bf16" in record:
        record["bf16_over_fp32"] = record["bf16"]["median_s"] / record["float32"]["median_s"]
    record["trainer"] = trainers["float32"]
    return record


def top_ops(step: Callable[[], None], count: int) -> List[tuple]:
    """(operator, share of self CPU time, calls) of the ``count`` costliest operators of one ``step()``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / total, e.count) for e in events[:count]]


def measure_release_form(expid: str, params: dict, feature_map, batch: dict, schedule: Schedule,
                         work_dir: str) -> dict:
    """Float32 train and eval steps of ours against the release's form of the same model, alternated."""
    ours = build_model(params, feature_map, work_dir)
    release = loop_reference_model(build_model(params, feature_map, work_dir), params)
    trainers = {"ours": Trainer(ours, TrainingConfig(verbose=0)), "release": Trainer(release, TrainingConfig(verbose=0))}
    record = {"expid": expid}
    for model in (ours, release):
        model.train()
    record["train"] = alternate({k: step_function(t, batch) for k, t in trainers.items()}, schedule)
    for model in (ours, release):
        model.eval()
    record["eval"] = alternate({"ours": eval_function(ours, batch), "release": eval_function(release, batch)}, schedule)
    return record


def measure_release(expid: str, params: dict, feature_map, batch: dict, schedule: Schedule, work_dir: str,
                    release_dir: str) -> dict:
    """Float32 train and eval steps of ours against the authors' release (same weights), alternated."""
    ours = build_model(params, feature_map, work_dir)
    torch.manual_seed(0)
    release = build_release_model(release_dir, expid, feature_map, model_root=work_dir)
    copy_weights(release, ours)
    trainer = Trainer(ours, TrainingConfig(verbose=0))
    release._max_gradient_norm = trainer.config.max_gradient_norm  # what FuxiCTR's fit() sets before train_step
    record = {"expid": expid, "release_expid": release_expid(expid)}
    for model in (ours, release):
        model.train()
    record["train"] = alternate({"ours": step_function(trainer, batch),
                                 "release": functools.partial(release.train_step, batch)}, schedule)
    for model in (ours, release):
        model.eval()
    record["eval"] = alternate({"ours": eval_function(ours, batch), "release": eval_function(release, batch)}, schedule)
    return record


def tables(records: List[dict], release_records: List[dict], peaks: Dict[str, float],
           release_title: str = RELEASE_FORM_TITLE) -> str:
    lines = ["| model (config) | GFLOP / step | fp32 ms median / min | fp32 % peak | bf16 ms median / min "
             "| bf16 % fp32 peak | bf16 % bf16 peak | bf16 / fp32 step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        f32, b16 = r["float32"], r.get("bf16")
        bf16_cells = "| not run | | | " if b16 is None else (
            f"| {ms([b16['median_s'], b16['min_s']])} "
            f"| {100 * r['flops_per_step'] / b16['median_s'] / peaks['float32']:.0f}% "
            f"| {100 * b16['peak_fraction']:.0f}% | {r['bf16_over_fp32']:.2f} ")
        lines.append(f"| {r['expid']} | {r['flops_per_step'] / 1e9:.2f} | {ms([f32['median_s'], f32['min_s']])} "
                     f"| {100 * f32['peak_fraction']:.0f}% " + bf16_cells + "|")
    if release_records:
        lines += ["", release_title, "",
                  "| model (config) | mode | ours ms median / min | release ms median / min | speed-up |",
                  "|---|---|---|---|---|"]
        for r in release_records:
            for mode in ("train", "eval"):
                t = r[mode]
                speed_up = statistics.median(t["release"]) / statistics.median(t["ours"])
                lines.append(f"| {r['expid']} | {mode} | {ms(t['ours'])} | {ms(t['release'])} | {speed_up:.2f}x |")
    return "\n".join(lines)


def profile_lines(profiles: Dict[str, List[tuple]], threshold: float) -> str:
    if not profiles:
        return ""
    lines = ["", f"Float32 steps below {100 * threshold:.0f}% of the peak: the costliest operators of one "
                 "step (torch.profiler, share of self CPU time, calls):", ""]
    for expid, ops in profiles.items():
        lines.append(f"- {expid}: " + ", ".join(f"`{name}` {100 * share:.1f}% ({calls})" for name, share, calls in ops))
    return "\n".join(lines)


def main(argv=None) -> None:
    h = Harness("training_efficiency", __doc__.split("\n")[0])
    h.parser.add_argument("--ids", nargs="+", default=list(HEADLINE_IDS), help="experiment ids")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--vocab-size", type=int, default=10000)
    h.parser.add_argument("--steps", type=int, default=5, help="timed samples per contender")
    h.parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender")
    h.parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    h.parser.add_argument("--peak-repeats", type=int, default=5)
    h.parser.add_argument("--peak-size", type=int, default=PEAK_SIZE, help="n of the n^3 peak matmul")
    h.parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    h.parser.add_argument("--profile-below", type=float, default=0.6,
                          help="profile the float32 step of models below this fraction of the peak")
    h.parser.add_argument("--top-ops", type=int, default=8)
    h.parser.add_argument("--no-release-form", action="store_true",
                          help="skip the comparison with the release (or its in-repository form)")
    h.parser.add_argument("--release-dir", default=None,
                          help=f"{CHECKOUT}: compare RankMixer and RankElastor with it (default: with the "
                               "release's form written in this repository)")
    args = h.parse(argv)
    if args.release_dir is not None:
        load_release_module(h.parser, args.release_dir, RELEASE_PACKAGE, MODULE_NAME, CHECKOUT)
    configs = headline_configs(args.ids)
    if args.tiny:
        args.batch_size, args.steps, args.warmup, args.peak_repeats, args.vocab_size = 16, 1, 1, 1, 100
        configs = dict(list(configs.items())[:1] + [(k, v) for k, v in configs.items() if v and
                                                      v["model"] == "RankMixer"][:1])
    cpu = args.clock == "cpu"
    schedule = Schedule(args.steps, args.warmup, cpu, 0.0)
    peak_size = 128 if args.tiny else args.peak_size
    precisions = list(dict.fromkeys(["float32", *args.precisions]))  # float32: the FLOP count and the ratio
    peaks = {p: gemm_peak(PEAK_DTYPES[p], peak_size, args.peak_repeats, cpu) for p in precisions}
    feature_map = make_feature_map(num_categorical=26, num_numeric=13, vocab_size=args.vocab_size)
    batch = random_batch(feature_map, args.batch_size, seed=0)
    records, release_records = [], []
    for expid, params in configs.items():
        records.append(measure_model(expid, params, feature_map, batch, schedule, args.work_dir, peaks, precisions))
        print(tables(records[-1:], [], peaks).splitlines()[-1], flush=True)
        if params["model"] in RELEASE_FORM_MODELS and not args.no_release_form:
            if args.release_dir is None:
                release_records.append(measure_release_form(expid, params, feature_map, batch, schedule,
                                                            args.work_dir))
            else:
                release_records.append(measure_release(expid, params, feature_map, batch, schedule, args.work_dir,
                                                       args.release_dir))
            print(tables([], release_records[-1:], peaks).splitlines()[-1], flush=True)
    for p in precisions:  # the peak again after the models: the best of both
        peaks[p] = max(peaks[p], gemm_peak(PEAK_DTYPES[p], peak_size, args.peak_repeats, cpu))
    profiles = {}
    for r in records:
        for p in precisions:
            r[p]["peak_fraction"] = r["flops_per_step"] / r[p]["median_s"] / peaks[p]
        trainer = r.pop("trainer")
        if r["float32"]["peak_fraction"] < args.profile_below:
            profiles[r["expid"]] = r["profile"] = top_ops(step_function(trainer, batch), args.top_ops)
    with open("/proc/loadavg") as fd:
        load = " ".join(fd.read().split()[:3])
    with open("/proc/cpuinfo") as fd:
        flags = sorted({flag for flag in fd.read().split() if flag in BF16_CPU_FLAGS})
    header = (f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, {args.steps} samples after "
              f"{args.warmup} warm-up steps per contender, {args.clock} clock; same-process "
              f"{peak_size}^3 matmul peak: " + ", ".join(f"{p} {peaks[p] / 1e9:.1f} GFLOP/s" for p in precisions)
              + f"; load average at the end {load}; CPU bfloat16 flags: {', '.join(flags) or 'none'}")
    release_title = RELEASE_FORM_TITLE if args.release_dir is None else RELEASE_TITLE
    body = (header + "\n\n" + tables(records, release_records, peaks, release_title) + "\n"
            + profile_lines(profiles, args.profile_below))
    print(body)
    h.write(body, [{**r, "peaks_flop_s": peaks} for r in records]
            + [{"expid": r["expid"], "release_expid": r.get("release_expid"),
                "release" if args.release_dir else "release_form": {m: r[m] for m in ("train", "eval")}}
               for r in release_records])


if __name__ == "__main__":
    main()
