"""`agentkit model ...`: tools about the embedded DeepSeek-V4 model (no torch at import; commands import
what they need)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

model_app = typer.Typer(
    name="model",
    help="DeepSeek-V4 model tools: memory plans for multi-GPU layouts, training the tiny default model.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False)


def _config(spec: str):
    """A preset name (flash, pro) or a config.json path / checkpoint folder -> ModelConfig."""
    from agentkit.runtime.config import ModelConfig

    presets = {"flash": ModelConfig.flash, "pro": ModelConfig.pro}
    if spec.lower() in presets:
        return presets[spec.lower()]()
    path = Path(spec)
    if path.is_dir():
        return ModelConfig.from_folder(path)
    if path.is_file():
        cfg = json.loads(path.read_text())
        if "hidden_size" in cfg:
            return ModelConfig.from_hf_config(cfg)
        if "dim" in cfg:
            return ModelConfig.from_inference_config(cfg)
        raise typer.BadParameter(
            f"{path} is neither an HF config (hidden_size) nor an inference config "
            "(dim); pass the model's config.json"
        )
    raise typer.BadParameter(
        f"{spec!r} is not a preset (flash, pro), a config.json file or a checkpoint folder"
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


@model_app.command()
def plan(
    config: Annotated[str, typer.Argument(help="flash, pro, or a config.json path / checkpoint folder")],
    gpus: Annotated[str, typer.Option("--gpus", help="GPU counts to plan for, e.g. 8 or 2,4,8")] = "1,2,4,8",
    gpu_mem: Annotated[str, typer.Option("--gpu-mem", help="memory per GPU: 141GB, 80GiB, ...")] = "141GB",
    context: Annotated[str, typer.Option("--context", help="tokens per sequence: 1M, 128K, 65536")] = "1M",
    kv: Annotated[str, typer.Option("--kv", help="KV cache format: fp8, fp8-fp4idx or bf16")] = "fp8",
    usable: Annotated[float, typer.Option("--usable", help="fraction of GPU memory for weights + KV")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Per-GPU weight bytes (released precision: FP8 + scales, FP4 experts + scales, BF16, F32), KV cache per
    sequence and how many sequences of CONTEXT tokens fit, for tensor parallel (the official sharding) and
    data-parallel attention + expert parallel."""
    from agentkit.runtime.plan import make_plan, parse_bytes, parse_tokens

    try:
        counts = [int(x) for x in gpus.split(",") if x.strip()]
        p = make_plan(
            _config(config),
            counts,
            parse_bytes(gpu_mem),
            parse_tokens(context),
            kv,  # type: ignore[arg-type]
            usable,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if as_json:
        typer.echo(json.dumps(p.to_dict(), indent=2))
        return
    console.print(
        f"[bold]{config}[/]: {p.params / 1e9:,.1f}B parameters, checkpoint "
        f"{_gb(p.checkpoint_bytes)} in {p.n_tensors:,} tensors"
    )
    console.print(
        f"KV cache ({kv}) per sequence of {p.context:,} tokens: {_gib(p.kv_per_sequence)}; GPU "
        f"{_gb(p.gpu_bytes)}, {usable:.0%} usable"
    )
    table = Table("GPUs", "layout", "weights / GPU", "free / GPU", "sequences", "fits")
    invalid = []
    for r in p.rows:
        if not r.valid:
            table.add_row(str(r.gpus), r.layout, "-", "-", "-", "[red]n/a[/]")
            invalid.append(f"{r.layout} on {r.gpus} GPUs: {r.note}")
            continue
        fits = "[green]yes[/]" if r.fits else "[red]no[/]"
        table.add_row(
            str(r.gpus), r.layout, _gb(r.weights_per_rank), _gb(r.free_per_rank), str(r.sequences), fits
        )
    console.print(table)
    console.print(
        "tp: official sharding (heads, vocab and experts split); every GPU holds the KV of every "
        "sequence (one latent KV head)."
    )
    console.print(
        "dp_attn: attention replicated (all heads of a layer on one GPU, as the sparse decode "
        "kernels need), experts split; each GPU holds only its own sequences' KV."
    )
    for line in invalid:
        console.print(f"[red]{line}[/]")


@model_app.command("train-tiny")
def train_tiny(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: data/, model/, train.log.jsonl")],
    steps: Annotated[
        int, typer.Option(help="training steps: the budget, the same run on any machine (0: --minutes alone)")
    ] = 3400,
    minutes: Annotated[float | None, typer.Option(help="also stop after this many minutes")] = None,
    tasks: Annotated[int, typer.Option(help="training tasks (expert trajectories run in a sandbox)")] = 2500,
    seed: Annotated[int, typer.Option(help="seed of the weights and the batch order")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    device: Annotated[str, typer.Option(help="cpu, or cuda when a GPU is available")] = "cpu",
    init: Annotated[
        Path | None, typer.Option(help="continue from this checkpoint (trained with OUT's tokenizer)")
    ] = None,
    copy_warmup: Annotated[
        int | None, typer.Option(help="at most this many steps on synthetic recall rows first (default 1200, "
                                 "0 with --init)")
    ] = None,
    copy_every: Annotated[int, typer.Option(help="then every n-th step a recall-row step (0: never)")] = 2,
    first_turn_every: Annotated[
        int, typer.Option(help="every n-th step on first turns without the system prefix (0: never)")
    ] = 3,
    turn_rows: Annotated[
        str, typer.Option(help="those rows: 'first' turns, or 'whole' conversations")
    ] = "whole",
    varied_outputs: Annotated[
        int, typer.Option(help="per task, copies whose copied tool outputs (counts, paths) are drawn wide")
    ] = 2,
    varied_in: Annotated[
        str, typer.Option(help="those copies join the prefix-less rows ('turns') or all rows ('all')")
    ] = "all",
    copy_hard: Annotated[
        float, typer.Option(help="fraction of recall words with a repeated token inside (numbers, phrases)")
    ] = 0.3,
    previous_back: Annotated[
        int, typer.Option(help="the first layer's readout names the tokens 1..n positions back")
    ] = 2,
    decay_frac: Annotated[
        float, typer.Option(help="the last fraction of the task phase decays the learning rate to 10%")
    ] = 0.5,
    lr_scale: Annotated[float, typer.Option(help="scale every learning rate (fine-tuning: <1)")] = 1.0,
    ema_decay: Annotated[
        float, typer.Option(help="task-phase weight average, also saved as OUT/model_ema (0: none)")
    ] = 0.995,
) -> None:
    """Reproduce the shipped default model: generate the task corpus, run the expert in a sandbox, train the
    tokenizer, then train the tiny DeepSeek-V4 with the runtime's model code (Muon + AdamW). The checkpoint
    lands in OUT/model; `agentkit eval --model OUT/model` measures it."""
    from agentkit.tinymodel.train import main as train_main

    argv = [
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--tasks",
        str(tasks),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
        "--device",
        device,
    ]
    if minutes is not None:
        argv += ["--minutes", str(minutes)]
    if init is not None:
        argv += ["--init", str(init)]
    if copy_warmup is not None:
        argv += ["--copy-warmup", str(copy_warmup)]
    argv += ["--copy-every", str(copy_every), "--first-turn-every", str(first_turn_every)]
    argv += ["--turn-rows", turn_rows, "--varied-outputs", str(varied_outputs), "--varied-in", varied_in]
    argv += ["--copy-hard", str(copy_hard), "--previous-back", str(previous_back)]
    argv += ["--decay-frac", str(decay_frac), "--lr-scale", str(lr_scale), "--ema-decay", str(ema_decay)]
    train_main(argv)
