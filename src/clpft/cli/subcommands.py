"""`clpft mine`, `clpft train` and `clpft eval` as Python functions of the declared options (MiningOptions,
TrainConfig) and paths: the command line parses its flags into them (clpft.cli.commands), and each row of
`clpft ablation` calls them with its own options (clpft.ablation), so a row is exactly the subcommand."""

from __future__ import annotations

from pathlib import Path

from clpft.errors import ClpftError
from clpft.options import MiningOptions, TrainConfig


def mine_command(
    data: str,
    split: str,
    out: str,
    options: MiningOptions,
    *,
    model: str | None = None,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> None:
    """`clpft mine`: the training split of ``data`` mined into ``out`` (train.jsonl and its stats)."""
    from clpft.cli import stages
    from clpft.data import load_dataset
    from clpft.models import load_model

    stages.check_output(out, overwrite=overwrite)
    dataset = load_dataset(data, split)
    loaded = load_model(model, trust_remote_code=trust_remote_code) if options.strategy == "ance" else None
    examples, stats = stages.mine(loaded, dataset, options, out, show_progress=not quiet)
    print(stats.summary())
    print(f"wrote {out} ({len(examples)} queries)")


def train_command(
    train_file: str,
    out: str,
    config: TrainConfig,
    *,
    model: str | None = None,
    trust_remote_code: bool = False,
    max_train_queries: int | None = None,
    val_corpus: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    quiet: bool = False,
) -> None:
    """`clpft train`: a model folder at ``out`` trained on ``train_file`` with ``config``."""
    from clpft.cli import stages
    from clpft.data import read_train_jsonl
    from clpft.files import remove_stale_temporaries
    from clpft.models import DEFAULT_MODEL_NAME, load_model
    from clpft.moe.preparation import check_preparable
    from clpft.training.checkpoints import remove_all

    folder = Path(out)
    checkpoints = stages.checkpoints_of(folder)
    config.checkpoint_dir = str(checkpoints) if (config.save_steps or resume) else None
    if not Path(train_file).is_file():
        raise ClpftError(f"{train_file}: file not found")
    identity = stages.training_identity(config, train_file, model or DEFAULT_MODEL_NAME)
    if resume:
        for leftover in remove_stale_temporaries(folder.parent, name=folder.name):
            print(f"removed {leftover}, left by an interrupted write", flush=True)
        if stages.training_state(folder, identity, resume=True) == "finished":
            remove_all(checkpoints)
            print(f"{out} is already finished", flush=True)
            return
    stages.check_output(folder, overwrite=overwrite)
    if checkpoints.is_dir() and not resume and config.save_steps:
        raise ClpftError(f"{checkpoints} holds checkpoints of an earlier run (pass --resume to continue it)")
    loaded = load_model(model, trust_remote_code=trust_remote_code)
    check_preparable(loaded, config)  # before the training file is read and the validation corpus encoded
    examples = stages.sample_examples(read_train_jsonl(train_file), max_train_queries, config.seed)
    val_texts = None
    if val_corpus:
        from clpft.data.beir import load_corpus

        path = Path(val_corpus)
        val_texts = {
            d: doc.full_text for d, doc in load_corpus(path / "corpus.jsonl" if path.is_dir() else path).items()
        }
    result = stages.train(
        loaded,
        examples,
        config,
        folder,
        base_model=model or DEFAULT_MODEL_NAME,
        source=train_file,
        val_corpus=val_texts,
        overwrite=overwrite,
        show_progress=not quiet,
        train_file=train_file,
    )
    last = result.loss_history[-1]["loss"] if result.loss_history else float("nan")
    print(
        f"trained {result.optimizer_steps} steps in {result.seconds:.0f} s (last logged loss {last:.4f}); wrote {out}"
    )


def eval_command(
    data: str | None,
    split: str,
    out: str | None,
    *,
    model: str | None = None,
    trust_remote_code: bool = False,
    top_k: int,
    query_max_tokens: int,
    passage_max_tokens: int,
    encode_batch_size: int,
    mteb: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> None:
    """`clpft eval`: ``model`` tested on ``data``'s ``split`` (and/or MTEB tasks), the metrics written to ``out``."""
    from clpft.cli import stages
    from clpft.cli.pipeline import format_table
    from clpft.data import load_dataset
    from clpft.files import write_json
    from clpft.models import DEFAULT_MODEL_NAME, load_model

    if out:
        stages.check_output(out, overwrite=overwrite)
    if not data and not mteb:
        raise ClpftError("clpft eval needs --data, --mteb or both")
    dataset = load_dataset(data, split) if data else None
    loaded = load_model(model, trust_remote_code=trust_remote_code)
    result: dict = {"model": model or DEFAULT_MODEL_NAME, "data": data}
    if dataset is not None:
        result |= stages.evaluate(
            loaded,
            dataset,
            top_k=top_k,
            query_max_tokens=query_max_tokens,
            passage_max_tokens=passage_max_tokens,
            encode_batch_size=encode_batch_size,
            show_progress=not quiet,
        )
    if mteb:
        from clpft.evaluation.mteb_bridge import run_mteb

        result["mteb"] = run_mteb(loaded, [t.strip() for t in mteb.split(",") if t.strip()])
    if out:
        write_json(out, result)
    if dataset is not None:
        print(format_table({split: result["metrics"]}))
    for task, scores in result.get("mteb", {}).items():
        print(f"MTEB {task}: main score {scores['main_score']:.4f}")
