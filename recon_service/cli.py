"""The ``recon`` command line: simulate, reconstruct, evaluate, train, export and the model zoo, demo, serve."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipelines.data import InputError
from recon_service.progress import ProgressBar, write_mri_set


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """``["lam=0.01", "maps=espirit"]`` -> ``{"lam": 0.01, "maps": "espirit"}``."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        params[key.strip()] = _parse_value(value.strip())
    return params


def parse_method_params(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["cg-sense.lam=0.01"]`` -> ``{"cg-sense": {"lam": 0.01}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_params(items).items():
        method, dot, name = key.partition(".")
        if not dot:
            raise ValueError(f"--param for evaluate expects METHOD.KEY=VALUE, got {key!r}")
        out.setdefault(method, {})[name] = value
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with this command's error line: usage, then ``recon: error: ...`` and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("recon").strip()
        where = f" (see `recon {command} --help`)" if command else " (see `recon --help`)"
        self.exit(2, f"recon: error: {message}{where}\n")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _port(text: str) -> int:
    value = _int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0 to 65535, got {value}")
    return value


def check_port_free(host: str, port: int) -> None:
    """A ``ValueError`` naming the problem when ``host:port`` cannot be listened on (in use, not this machine's
    address); port 0 (any free port) always passes."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ValueError(f"cannot listen on {host}:{port}: unknown host ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


# ---------------------------------------------------------------- simulate

def cmd_simulate_mri(args: argparse.Namespace) -> int:
    from pipelines.simulate import mri

    cfg = mri.MRISimulationConfig(size=args.size, coils=args.coils, slices=args.slices, snr_db=args.snr,
                                  mask=args.mask, readout_oversampling=args.readout_oversampling, seed=args.seed,
                                  gamma_range=tuple(args.gamma) if args.gamma else None)
    cfg.validate()
    if any(not a >= 1 for a in args.acceleration):
        raise ValueError(f"--acceleration must be >= 1 (1: fully sampled), got {args.acceleration}")
    out = Path(args.out)
    if args.set:
        names = list(mri.BENCHMARK_SETS) if args.set == "all" else [args.set]
        total = 0
        for name in names:
            split, contrasts, orientations, accelerations = mri.BENCHMARK_SETS[name]
            repeats = mri.TRAIN_REPEATS if name == "train" else 1
            specs = mri.plan(split, contrasts, orientations, accelerations, cfg, args.max_files, repeats)
            total += len(write_mri_set(out / name, specs, cfg))
        print(f"wrote {total} files under {out}")
        return 0
    specs = mri.plan(args.split, tuple(args.contrast), tuple(args.orientation), tuple(args.acceleration), cfg,
                     args.max_files)
    if not specs:
        raise ValueError(f"no slabs of split {args.split!r} in the requested orientations")
    written = write_mri_set(out, specs, cfg)
    print(f"wrote {len(written)} files to {out}")
    return 0


def cmd_simulate_ct(args: argparse.Namespace) -> int:
    from pipelines.simulate.ct import simulate_ct_dataset

    if args.arc is not None and not 0 < args.arc <= 360:
        raise ValueError(f"--arc must be more than 0 and at most 360 degrees, got {args.arc:g}")
    bar = ProgressBar("simulating CT")
    try:
        written = simulate_ct_dataset(Path(args.out), views=args.views, arc_deg=args.arc, geometry=args.geometry,
                                      noise_i0=args.noise, source=args.source, size=args.size, slices=args.slices,
                                      seed=args.seed, progress=bar, fan_detector=args.detector)
    finally:
        bar.close()
    print(f"wrote {len(written)} files to {args.out}")
    return 0


# ---------------------------------------------------------------- reconstruct / evaluate

def with_provider_preference(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Learned methods take the ONNX Runtime provider preference from RECON_PROVIDERS unless given."""
    from pipelines.reconstructors import learned_models
    from recon_service.settings import Settings

    providers = Settings().provider_list()
    if providers and "providers" not in params and method in learned_models():
        return {**params, "providers": providers}
    return params


def format_chosen(chosen: dict[str, Any]) -> str:
    """One line for the weights a method chose from the data, e.g. ``lam=0.0042 (noise sigma 1.2e-05 from ...)``."""
    weights = ", ".join(f"{k}={v:.4g}" for k, v in chosen.items() if isinstance(v, float) and k.startswith("lam"))
    noise = chosen.get("noise") or {}
    if "sigma" in noise:
        return f"{weights} (noise sigma {noise['sigma']:.3g} from {noise['source']}; {chosen.get('rule', '')})"
    if not weights:  # a method that chose no weight (adps: its mode and sampler settings) says what ran
        return str(chosen.get("rule", ""))
    return f"{weights} ({chosen.get('rule', '')})"


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from pipelines.pipeline import reconstruct_file

    bar = ProgressBar(f"{args.method}")
    try:
        params = parse_params(args.param)
        if args.model_id:
            params["model_id"] = args.model_id
        params = with_provider_preference(args.method, params)
        result = reconstruct_file(args.input, args.method, args.out, params, progress=bar)
    finally:
        bar.close()
    for kind, path in result.outputs.items():
        print(f"{kind}: {path}")
    chosen = result.volume.attrs.get("chosen")
    if chosen:
        print(f"chosen: {format_chosen(chosen)}")
    report = result.volume.attrs.get("consistency_report")
    if report:
        from pipelines.confidence import consistency_summary, flag_text

        print(f"consistency: {consistency_summary(report)}")
        flag = flag_text(report)
        if flag:
            print(f"warning: {flag}", file=sys.stderr)
    if result.metrics:
        print("  ".join(f"{k.upper()} {v:.4f}" for k, v in result.metrics.items()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines.evaluate import dataset_files, evaluate_directory, format_summary

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError("--methods is empty")
    files = dataset_files(args.directory, args.pattern)[:args.max_files]
    bar = tqdm(total=len(files) * len(methods), desc="evaluating", unit="recon", file=sys.stderr)
    try:
        summary = evaluate_directory(args.directory, methods, parse_method_params(args.param), args.max_files,
                                     progress=lambda name, method: bar.update(1), pattern=args.pattern)
    finally:
        bar.close()
    print(f"{summary['dataset']}: {summary['volumes']} volumes")
    print(format_summary(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"json: {args.json}")
    return 0


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _load_config(text: str | None, option: str = "--config") -> dict[str, Any]:
    """``--config`` (or ``option``): JSON text (starting with ``{``) or the path of a JSON file."""
    if not text:
        return {}
    if text.lstrip().startswith(("{", "[")) or (not Path(text).exists() and _is_json(text)):
        source, raw = option, text
    else:
        source = f"{option} {text}"
        try:
            raw = Path(text).read_text()
        except FileNotFoundError:
            raise ValueError(f"{option} {text}: no such file (give a JSON file or JSON text like "
                             "'{\"lr\": 1e-4}')") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{option} {text}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{source}: must be a JSON object, not {type(value).__name__}")
    return value


def _config_overrides(args: argparse.Namespace, config_type: type, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """``--config``'s settings, refused (``ValueError`` listing the known ones) where ``config_type`` has no such
    field or the command sets it itself (``fixed``)."""
    from dataclasses import fields

    overrides = _load_config(args.config)
    known = {f.name for f in fields(config_type)} - set(fixed)
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return overrides


def _set_given(cfg: Any, args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """The command-line options among ``names`` that were given override the config's."""
    for name in names:
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)


def _train_with_progress(label: str, steps: int, run: Callable[[Callable[[int, int, float], None]], Path]) -> int:
    """``run(progress)`` under a progress bar of ``steps`` training steps, then the weights' path."""
    bar = tqdm(total=steps, desc=f"training {label}", unit="step", file=sys.stderr)

    def progress(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=True)

    try:
        weights = run(progress)
    finally:
        bar.close()
    print(f"weights: {weights}")
    return 0


def cmd_train_ct_prior(args: argparse.Namespace) -> int:
    from pipelines.train_prior import CTPriorConfig, train_prior, training_volumes

    cfg = CTPriorConfig(**_config_overrides(args, CTPriorConfig))
    if args.data is not None:
        cfg.data = "brain" if args.data == ["brain"] else list(args.data)
    if args.val_data is not None:
        raise ValueError("ct-prior validates on its own data (the brain's tuning slab, or slices of the first "
                         "volume given); --val-data is for the MRI networks")
    _set_given(cfg, args, ("steps", "seed", "threads", "init_from"))
    cfg.check()
    if cfg.data != "brain":
        training_volumes(cfg.data)  # names a missing or empty path before any work
    return _train_with_progress("ct-prior", cfg.steps,
                                lambda progress: train_prior(cfg, Path(args.out), resume=args.resume,
                                                             progress=progress))


MRI_PRIORS = {"ambient-prior": "ambient", "diffusion-prior": "fully-sampled"}


def cmd_train_mri_prior(args: argparse.Namespace) -> int:
    from pipelines.train_mri_prior import MRIPriorConfig, train_mri_prior, training_files

    cfg = MRIPriorConfig(kind=MRI_PRIORS[args.model], **_config_overrides(args, MRIPriorConfig, fixed=("kind",)))
    if args.data is not None:
        cfg.data = args.data[0] if len(args.data) == 1 else list(args.data)
    if args.val_data is not None:
        raise ValueError(f"{args.model} validates on the last val_slices slices of its own data; --val-data is for "
                         "RecurrentVarNet and RIM")
    if args.acceleration is not None:
        if args.model != "ambient-prior":
            raise ValueError("--acceleration is the ambient prior's training undersampling; diffusion-prior trains "
                             "on fully sampled data")
        cfg.acceleration = args.acceleration
    _set_given(cfg, args, ("steps", "seed", "threads", "init_from"))
    cfg.check()
    training_files(cfg.data)  # names a missing or empty directory before any work
    return _train_with_progress(args.model, cfg.steps,
                                lambda progress: train_mri_prior(cfg, Path(args.out), resume=args.resume,
                                                                 progress=progress))


def cmd_train(args: argparse.Namespace) -> int:

    from pipelines.train import TrainConfig, as_directories, default_model_config, train

    if args.model == "ct-prior":
        return cmd_train_ct_prior(args)
    if args.model in MRI_PRIORS:
        return cmd_train_mri_prior(args)
    if args.acceleration is not None:
        raise ValueError("--acceleration is for ambient-prior; RecurrentVarNet and RIM train at the accelerations "
                         "of their config ('accelerations')")
    overrides = _config_overrides(args, TrainConfig)
    overrides.setdefault("model_config", default_model_config(args.model))
    cfg = TrainConfig(model=args.model, **overrides)
    if args.data is not None and len(args.data) == 1:
        args.data = args.data[0]
    _set_given(cfg, args, ("data", "val_data", "steps", "seed", "threads", "init_from"))
    cfg.check()
    for directory in as_directories(cfg.data):
        if not directory.is_dir():
            raise InputError(directory, "training data directory not found (make one with "
                             "`recon simulate mri --out data/brain-bench --set all`)")
    if cfg.val_data and not Path(cfg.val_data).is_dir():
        raise InputError(cfg.val_data, "validation data directory not found (give --val-data, or "
                         "\"val_data\": null in --config)")
    return _train_with_progress(cfg.model, cfg.steps,
                                lambda progress: train(cfg, Path(args.out), resume=args.resume, progress=progress))


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from pipelines.zoo import list_models

    for card in list_models():
        metrics = card.get("metrics", {}).get("test", {})
        brief = "  ".join(f"{acc}: {m['psnr']['mean']:.2f} dB" for acc, m in metrics.items())
        print(f"{card['id']:<34} {card['kind']:<16} {card['parameters']:>9,} params  {brief}")
    return 0


def cmd_zoo_ship(args: argparse.Namespace) -> int:
    from pipelines.ship import DEFAULT_DATA_NOTE, ship_run
    from pipelines.ship_mri_prior import is_mri_prior_run, ship_mri_prior_run
    from pipelines.ship_prior import is_prior_run, ship_prior_run

    if is_mri_prior_run(Path(args.run)):
        card = ship_mri_prior_run(Path(args.run), args.id, progress=lambda msg: print(msg, file=sys.stderr),
                                  data_note=args.data_note)
        print(f"card: {card}")
        return 0
    if is_prior_run(Path(args.run)):
        card = ship_prior_run(Path(args.run), args.id, progress=lambda msg: print(msg, file=sys.stderr),
                              data_note=args.data_note)
        print(f"card: {card}")
        return 0

    card = ship_run(Path(args.run), args.id, Path(args.eval_data), progress=lambda msg: print(msg, file=sys.stderr),
                    data_note=args.data_note or DEFAULT_DATA_NOTE, ffts=args.fft)
    print(f"card: {card}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.engines import export_zoo_model

    if args.format != "onnx":
        raise ValueError(f"unsupported export format {args.format!r}")
    print(f"exporting {args.model_id} with the {args.fft} FFT (this takes a minute)...", file=sys.stderr)
    path, psnr_db = export_zoo_model(args.model_id, args.fft, Path(args.out) if args.out else None)
    print(f"onnx: {path}")
    print(f"parity ONNX Runtime CPU vs torch: {psnr_db:.1f} dB PSNR")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from pipelines.method_docs import method_table, methods_text

    print(method_table() if args.markdown else methods_text(args.verbose))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recon_service.demo import run_demo

    if args.port is not None:
        check_port_free("127.0.0.1", args.port)
    return run_demo(Path(args.out), compare=args.compare, port=args.port)


# ---------------------------------------------------------------- token, db

def _database():
    """The configured database (RECON_DATA_DIR / RECON_DATABASE_URL), migrated to the newest schema."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from recon_service.db.migrate import open_migrated
    from recon_service.settings import Settings

    url = Settings().sqlalchemy_url()
    try:
        return open_migrated(url)
    except (ArgumentError, OperationalError) as err:
        shown = make_url(url).render_as_string(hide_password=True) if not isinstance(err, ArgumentError) else "URL"
        raise ValueError(f"cannot open the database {shown}: {getattr(err, 'orig', None) or err}") from None


def cmd_token_create(args: argparse.Namespace) -> int:
    from recon_service.security.token_admin import create_token

    token, info = create_token(_database(), args.name, args.scopes)
    print(token)
    print(f"token {info.name!r} created with scopes {','.join(info.scopes)}; it is shown only now, "
          "the database keeps its SHA-256", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from recon_service.security.token_admin import format_tokens, list_tokens

    print(format_tokens(list_tokens(_database())))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from recon_service.security.token_admin import revoke_token

    info = revoke_token(_database(), args.name)
    print(f"token {info.name!r} revoked at {info.revoked_at.isoformat(timespec='seconds')}")
    return 0


def cmd_pacs_check(args: argparse.Namespace) -> int:
    """Load RECON_PACS_CONFIG (or --config) and probe every destination; exit 1 when any does not answer."""
    from recon_service.pacs.config import load_pacs_config
    from recon_service.pacs.senders import DeliveryError, probe
    from recon_service.settings import Settings

    path = args.config or Settings().pacs_config
    if path is None:
        raise ValueError("no PACS configuration: set RECON_PACS_CONFIG or give --config FILE")
    config = load_pacs_config(path)
    print(f"{path}: {len(config.destinations)} destination(s), {len(config.inbound.rules)} inbound rule(s)")
    failed = 0
    for name, destination in sorted(config.destinations.items()):
        try:
            print(f"  {name} ({destination.kind}): ok, {probe(destination)}")
        except DeliveryError as err:
            failed += 1
            print(f"  {name} ({destination.kind}): FAILED, {err}")
    return 1 if failed else 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from recon_service.db.migrate import current_revision

    print(current_revision(_database()))
    return 0


# ---------------------------------------------------------------- batch

def needs_gpu(params: dict[str, Any]) -> bool:
    """Whether a job with ``params`` runs on a GPU: a torch ``device`` of cuda, or a CUDA / TensorRT provider."""
    device = str(params.get("device") or "")
    providers = params.get("providers") or []
    return device.startswith("cuda") or any("CUDA" in str(p) or "Tensorrt" in str(p) for p in providers)


def cmd_batch(args: argparse.Namespace) -> int:
    from recon_service.batch.inputs import list_inputs
    from recon_service.batch.run import format_report, run_batch, write_progress
    from recon_service.executors import make_executor
    from recon_service.jobs.catalog import get_pipeline

    try:
        info = get_pipeline(args.pipeline)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    params = _load_config(args.params, "--params") if args.params else {}
    info.check(params)  # a bad parameter is refused before any worker starts
    items = list_inputs(args.input)
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if needs_gpu(params) else 0.0)
    if args.executor == "local" and args.gpus_per_worker:
        raise ValueError("--gpus-per-worker asks Ray for GPUs; the local executor uses the devices --params names")
    executor = make_executor(args.executor, args.workers, address=args.address, gpus=gpus)
    on_start, on_file, close = write_progress()
    try:
        report = run_batch(items, info.name, args.out, executor, params, max_attempts=args.max_attempts,
                           providers=os.environ.get("RECON_PROVIDERS", ""), on_file=on_file, on_start=on_start)
    except KeyboardInterrupt:
        report = None
    finally:
        close()
    if report is None:
        print(f"recon: interrupted; finished files are kept in {args.out} (status.jsonl); run the same command "
              "again to resume", file=sys.stderr)
        return 130
    print(format_report(report))
    print(f"status: {Path(args.out) / 'status.jsonl'}\nsummary: {Path(args.out) / 'summary.json'}")
    return 1 if report.count("failed") else 0


# ---------------------------------------------------------------- service

def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from recon_service.api import create_app
    from recon_service.pacs.config import load_pacs_config
    from recon_service.settings import Settings

    settings = Settings(**({"workers": args.workers} if args.workers is not None else {}))
    load_pacs_config(settings.pacs_config)  # a bad RECON_PACS_CONFIG stops here, naming the file and the key
    check_port_free(args.host, args.port)  # before the app starts its workers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    except SystemExit as err:  # uvicorn exits with 3 when it cannot start (its log above says why)
        if err.code in (None, 0):
            return 0
        raise ServiceFailed(f"recon serve stopped: the service could not start on {args.host}:{args.port} "
                            "(see the log above)") from None
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from pipelines.reconstructors import learned_models
    from pipelines.simulate.brain import CONTRASTS, ORIENTATIONS
    from pipelines.simulate.splits import BENCHMARK_SETS, SPLITS

    parser = _Parser(prog="recon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write simulated acquisitions with ground truth")
    sim_sub = sim.add_subparsers(dest="modality", required=True)
    mri = sim_sub.add_parser("mri", help="multi-coil brain MRI (fastMRI HDF5 files)")
    mri.add_argument("--out", required=True, help="output directory")
    mri.add_argument("--slices", type=int, default=4, help="slices per file (default 4)")
    mri.add_argument("--coils", type=int, default=8, help="receive coils (default 8)")
    mri.add_argument("--acceleration", type=float, nargs="+", default=[4.0],
                     help="one or more accelerations; 1 writes fully sampled k-space (default 4)")
    mri.add_argument("--contrast", nargs="+", default=["t1"], choices=CONTRASTS)
    mri.add_argument("--orientation", nargs="+", default=["axial"], choices=ORIENTATIONS)
    mri.add_argument("--split", default="test", choices=SPLITS)
    mri.add_argument("--set", choices=[*BENCHMARK_SETS, "all"],
                     help="a standard benchmark set (overrides split/contrast/orientation/acceleration); "
                          "'all' writes every set into its own subdirectory")
    mri.add_argument("--size", type=int, default=128, help="matrix size (default 128, 240 mm FOV)")
    mri.add_argument("--snr", type=float, default=30.0, help="SNR in dB (default 30)")
    mri.add_argument("--mask", default="random", choices=["random", "equispaced", "poisson"])
    mri.add_argument("--readout-oversampling", type=int, default=1, choices=[1, 2])
    mri.add_argument("--max-files", type=int, default=None, help="at most this many files per set")
    mri.add_argument("--seed", type=int, default=0)
    mri.add_argument("--gamma", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="intensity augmentation: each slab's magnitude to a random power in [LOW, HIGH] "
                          "(log-uniform; monotone, so the tissue order of each contrast is kept)")
    mri.set_defaults(func=cmd_simulate_mri)

    ct = sim_sub.add_parser("ct", help="sparse-view CT sinograms (HDF5)")
    ct.add_argument("--out", required=True)
    ct.add_argument("--views", type=int, required=True, help="number of projection views")
    ct.add_argument("--arc", type=float, default=None,
                    help="angular range in degrees (default 180 for parallel beam, 360 for fan beam)")
    ct.add_argument("--geometry", default="parallel", choices=["parallel", "fan"])
    ct.add_argument("--detector", default="flat", choices=["flat", "equiangular"], help="fan-beam detector shape")
    ct.add_argument("--noise", type=float, default=None, help="incident photon count I0 (default: noiseless)")
    ct.add_argument("--source", default="shepp-logan",
                    help="shepp-logan, ellipsoids, brain, brain-test, brain-tuning (the CT prior's held-out and "
                         "tuning slabs: 64 slices 1 mm apart, give --slices 64), brain-gap-low, brain-gap-high (the "
                         "9 slices between them and the training ranges), or a DICOM CT directory / NIfTI file")
    ct.add_argument("--size", type=int, default=128)
    ct.add_argument("--slices", type=int, default=16)
    ct.add_argument("--seed", type=int, default=0)
    ct.set_defaults(func=cmd_simulate_ct)

    rec = sub.add_parser("reconstruct", help="reconstruct one acquisition file")
    rec.add_argument("input", help="fastMRI / ISMRMRD / sinogram HDF5 file")
    rec.add_argument("--method", required=True, help="see `recon methods`")
    rec.add_argument("--out", required=True, help="output directory, or a .nii/.nii.gz path")
    rec.add_argument("--param", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    rec.add_argument("--model-id", help="for learned methods: a model zoo id other than the shipped default")
    rec.set_defaults(func=cmd_reconstruct)

    bat = sub.add_parser("batch", help="reconstruct every file of a directory (or a manifest) with one pipeline, "
                                       "on local worker processes or a Ray cluster; resumable")
    bat.add_argument("input", help="a directory of raw-data files (.h5, .hdf5, .mrd, searched recursively), or a "
                                   "text manifest listing files one per line (or JSON lines with path and params)")
    bat.add_argument("--pipeline", required=True, help="the service pipeline, e.g. mri-cg-sense, ct-fbp "
                                                       "(`recon methods`; the pipeline is MODALITY-METHOD)")
    bat.add_argument("--out", required=True, type=Path, help="output folder: one subfolder per file, status.jsonl "
                                                             "and summary.json")
    bat.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local worker processes (default) or Ray actors")
    bat.add_argument("--workers", type=_int_at_least(1), default=1, help="workers (default 1)")
    bat.add_argument("--params", default=None, help="the pipeline's parameters as JSON, or a JSON file")
    bat.add_argument("--address", default=None, help="the Ray cluster (default RAY_ADDRESS; neither: a local Ray "
                                                     "with --workers CPUs)")
    bat.add_argument("--gpus-per-worker", type=float, default=None,
                     help="GPUs each Ray worker asks for (default 1 when --params name a cuda device or a CUDA / "
                          "TensorRT provider, else 0)")
    bat.add_argument("--max-attempts", type=_int_at_least(1), default=3,
                     help="runs of a file whose worker dies before it is reported failed (default 3)")
    bat.set_defaults(func=cmd_batch)

    ev = sub.add_parser("evaluate", help="PSNR/SSIM/NMSE of methods on a directory with references")
    ev.add_argument("directory")
    ev.add_argument("--methods", required=True, help="comma-separated method names")
    ev.add_argument("--json", help="write the summary JSON here")
    ev.add_argument("--max-files", type=_int_at_least(1), default=None)
    ev.add_argument("--pattern", default="*", help="glob for file names, e.g. '*_4x*' (default all)")
    ev.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("train", help="train RecurrentVarNet or RIM on fastMRI-format directories, the MRI "
                                      "diffusion priors (ambient-prior from undersampled data, diffusion-prior from "
                                      "fully sampled data), or the CT diffusion prior (ct-prior) on CT volumes")
    # the MRI priors' kind (mri-prior, what adps runs) trains as ambient-prior or diffusion-prior
    tr.add_argument("model", choices=sorted(({m.kind for m in learned_models().values()} - {"mri-prior"})
                                            | {"ct-prior"} | set(MRI_PRIORS)))
    tr.add_argument("--data", nargs="+", help="MRI: one or more directories of fastMRI-format files, fully sampled "
                                   "except for ambient-prior, which also takes undersampled ones (default "
                                   "data/brain-bench/train, the simulated training split; RecurrentVarNet and RIM "
                                   "also take 'randomized-brain': domain-randomised slices drawn on the fly, "
                                   "ranges in --config's 'randomize', alone or beside directories, taking "
                                   "'randomized_fraction' of the steps, default 0.5); ct-prior: DICOM "
                                   "CT series or NIfTI volumes (files or directories), or 'brain' (the default: the "
                                   "pseudo-CT brain's training range)")
    tr.add_argument("--val-data", dest="val_data", help="directory of undersampled files with references")
    tr.add_argument("--acceleration", type=float, help="ambient-prior: undersample fully sampled training files by "
                                                       "this factor first (default 4; undersampled files are used "
                                                       "as stored)")
    tr.add_argument("--config", help="JSON file or text overriding training settings, e.g. "
                                     "'{\"model_config\": {\"num_steps\": 8}, \"lr\": 3e-4}'")
    tr.add_argument("--steps", type=_int_at_least(1), help="optimiser steps (default 2000)")
    tr.add_argument("--seed", type=_int_at_least(0), help="seed for weights, masks and slice order (default 0)")
    tr.add_argument("--threads", type=_int_at_least(1), help="torch threads (default: torch's choice)")
    tr.add_argument("--init", dest="init_from", metavar="MODEL_ID|WEIGHTS",
                    help="fine-tune: start from a shipped model (e.g. recurrentvarnet-brain-sim) or a model.pt")
    tr.add_argument("--out", required=True, help="run directory: checkpoint, log.csv, val.jsonl, model.pt")
    tr.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    tr.set_defaults(func=cmd_train)

    zoo = sub.add_parser("zoo", help="shipped models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_sub.add_parser("list", help="list shipped models").set_defaults(func=cmd_zoo_list)
    ship = zoo_sub.add_parser("ship", help="evaluate a training run, export its ONNX engines and add it to "
                                           "models/zoo with a card (the zoo changes only if every step succeeds)")
    ship.add_argument("run", help="training run directory (model.pt, config.json, log.csv)")
    ship.add_argument("--id", required=True, help="model id, e.g. recurrentvarnet-brain-sim")
    ship.add_argument("--data-note", help="what the training data was, for the card (default: the simulated "
                                           "brain training split)")
    ship.add_argument("--eval-data", default="data/brain-bench",
                      help="directory with test/, test-orientation/, test-contrast/ (default data/brain-bench)")
    ship.add_argument("--fft", nargs="+", choices=["matmul", "dft-op"],
                      help="FFT variants of the ONNX engines to ship (default: matmul and those the model ships now)")
    ship.set_defaults(func=cmd_zoo_ship)

    ex = sub.add_parser("export", help="export a zoo model to ONNX (dynamic batch, coils and matrix size)")
    ex.add_argument("model_id")
    ex.add_argument("--format", default="onnx", choices=["onnx"])
    ex.add_argument("--fft", default="matmul", choices=["matmul", "dft-op"],
                    help="matmul runs on every ONNX Runtime provider; dft-op uses the ONNX DFT op (CPU only)")
    ex.add_argument("--out", help="output .onnx path (default models/zoo/MODEL_ID/model-FFT.onnx)")
    ex.set_defaults(func=cmd_export)

    methods = sub.add_parser("methods", help="list reconstruction methods (with -v: their parameters)")
    methods.add_argument("-v", "--verbose", action="store_true", help="every parameter: type, default, range")
    methods.add_argument("--markdown", action="store_true", help="the README's method tables")
    methods.set_defaults(func=cmd_methods)

    demo = sub.add_parser("demo", help="start the service on loopback, submit a simulated brain MRI and a CT study, "
                                       "wait, and print where the DICOM/NIfTI results are")
    demo.add_argument("--out", default="demo-out")
    demo.add_argument("--port", type=_port, help="loopback port of the demo service (default: a free one)")
    demo.add_argument("--compare", action="store_true",
                      help="instead reconstruct the studies with every method in-process and print metrics tables")
    demo.set_defaults(func=cmd_demo)

    tok = sub.add_parser("token", help="API tokens stored hashed in the service database")
    tok_sub = tok.add_subparsers(dest="token_command", required=True)
    tc = tok_sub.add_parser("create", help="make a new token; prints it once")
    tc.add_argument("--name", required=True, help="a unique name; it is the actor in the audit log")
    tc.add_argument("--scopes", required=True, help="comma separated: jobs:submit, jobs:read, review, admin")
    tc.set_defaults(func=cmd_token_create)
    tok_sub.add_parser("list", help="names, scopes, created and revoked times").set_defaults(func=cmd_token_list)
    tv = tok_sub.add_parser("revoke", help="revoke a token by name")
    tv.add_argument("name")
    tv.set_defaults(func=cmd_token_revoke)

    db = sub.add_parser("db", help="the service database (RECON_DATA_DIR / RECON_DATABASE_URL)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate to the newest schema; prints the revision").set_defaults(
        func=cmd_db_upgrade)

    pacs = sub.add_parser("pacs", help="PACS connections (RECON_PACS_CONFIG)")
    pacs_sub = pacs.add_subparsers(dest="pacs_command", required=True)
    check = pacs_sub.add_parser("check", help="check the configuration and probe every destination (C-ECHO, "
                                               "QIDO-RS); exit 1 if one does not answer")
    check.add_argument("--config", type=Path, default=None, help="the JSON file (default RECON_PACS_CONFIG)")
    check.set_defaults(func=cmd_pacs_check)

    serve = sub.add_parser("serve", help="run the HTTP service (API, job workers, metrics); settings from RECON_*")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=_int_at_least(0), default=None,
                       help="job worker processes (default RECON_WORKERS, else 1)")
    serve.set_defaults(func=cmd_serve)
    return parser


class ServiceFailed(RuntimeError):
    """The HTTP service (``recon serve``, the demo's service) could not start or a demo job failed."""


def describe_error(err: BaseException) -> str:
    """The text after ``recon: error:``: the message of an expected failure (bad input or parameters, a file
    problem, the service), else the exception's type and message."""
    from recon_service.client import ApiError
    from recon_service.demo import DemoFailed

    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        target = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else f"{err.filename}"
        return f"{target}: {err.strerror}"
    message = str(err).strip() or type(err).__name__
    from recon_service.executors.base import ExecutorError

    # ModelError is a ValueError
    expected = (InputError, ValueError, OSError, ApiError, ServiceFailed, DemoFailed, ExecutorError)
    if isinstance(err, expected):
        return message
    return f"{type(err).__name__}: {message} (an unexpected failure; RECON_DEBUG=1 prints the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``recon`` command; every failure ends in one ``recon: error: ...`` line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("RECON_DEBUG"):
            traceback.print_exc()
        print(f"recon: error: {describe_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
