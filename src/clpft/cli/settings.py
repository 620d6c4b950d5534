"""From parsed options (argparse, a ``--config`` YAML file) to the Python API's settings objects:
``TrainConfig``, ``MiningOptions``, ``QuerySources``, and those `clpft ablation`'s ladder rows start from.

Every option declared on a dataclass (``clpft.options.option``) reaches its field by its own name, so the
functions here copy nothing by hand; ``--neg-queries`` and ``--neg-queries-cache`` are the text forms of
``QuerySources.backends`` and ``.cache_path``.
"""

from __future__ import annotations

import argparse
import dataclasses

from clpft.errors import ClpftError


def train_config(args: argparse.Namespace):
    """The TrainConfig the parsed options ask for: every option it declares, by its field name."""
    from clpft.options import TrainConfig, cli_fields

    return TrainConfig(**{f.name: getattr(args, f.name) for f in cli_fields(TrainConfig) if hasattr(args, f.name)})


def mining_options(args: argparse.Namespace, cache: str):
    """The MiningOptions the parsed options ask for (num_negatives, seed and the lengths are TrainConfig's
    flags, read here by the same names)."""
    from clpft.options import MiningOptions

    names = [f.name for f in dataclasses.fields(MiningOptions) if f.name != "query_sources" and hasattr(args, f.name)]
    return MiningOptions(**{name: getattr(args, name) for name in names}, query_sources=own_query_settings(args, cache))


def generator_settings(args: argparse.Namespace, backends: list[str], cache: str | None, per_doc: int):
    """The QuerySources the parsed options ask for: every option it declares, by its field name."""
    from clpft.options import QuerySources, cli_fields

    declared = {f.name: getattr(args, f.name) for f in cli_fields(QuerySources) if hasattr(args, f.name)}
    declared["queries_per_negative"] = per_doc
    return QuerySources(backends=backends, cache_path=cache, seed=args.seed, **declared)


def own_query_settings(args: argparse.Namespace, default_cache: str):
    from clpft.ownqueries import parse_backends

    return generator_settings(
        args, parse_backends(args.neg_queries), args.neg_queries_cache or default_cache, args.queries_per_negative
    )


def ablation_settings(args: argparse.Namespace):
    """The (MiningOptions, TrainConfig) `clpft ablation`'s options ask for: every declared option given on its
    command line (or in --config), the rest at their declared defaults or their preset's; each ladder row
    changes what it sets itself with ``dataclasses.replace`` / ``TrainConfig.replace``."""
    from clpft.options import MiningOptions, QuerySources, TrainConfig, cli_fields
    from clpft.ownqueries import parse_backends

    def given(cls) -> dict:
        return {f.name: value for f in cli_fields(cls) if (value := getattr(args, f.name, None)) is not None}

    sources = QuerySources(
        **({"backends": parse_backends(args.neg_queries)} if args.neg_queries is not None else {}),
        **given(QuerySources),
        seed=args.seed,
    )
    mining = MiningOptions(**given(MiningOptions) | {"seed": args.seed}, query_sources=sources)
    return mining, TrainConfig(**given(TrainConfig) | {"seed": args.seed})


def ablation_passthrough() -> list[tuple]:
    """Options `clpft ablation`'s rows share, as (flag, type, subcommands, help, choices, field name): every
    declared mining, training and encoding option (clpft.options.option) except the booleans, the seed
    (the ablation has its own seeds) and what a ladder row sets itself (``ablation=False``)."""
    from clpft.options import MiningOptions, QuerySources, TrainConfig, choices_of, cli_fields

    def entries(cls, groups, where):
        for f in cli_fields(cls, groups, shared=cls is not MiningOptions):
            if f.type is bool or f.name == "seed" or f.metadata.get("ablation") is False:
                continue
            choices = f.metadata.get("choices") or choices_of(f.type)
            kind = str if choices else next((t for t in (int, float) if f.type in (t, t | None)), str)
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            yield (flag, kind, where, f.metadata["help"], choices, f.name)

    return [
        *entries(MiningOptions, ("mining", "sampling"), ("mine",)),
        *entries(TrainConfig, ("negatives",), ("mine", "train")),
        ("--neg-queries", str, ("mine",), "where negatives' queries come from", None, "neg_queries"),
        *entries(QuerySources, ("own-queries", "generation"), ("mine",)),
        *entries(TrainConfig, ("training",), ("train",)),
        *entries(TrainConfig, ("common",), ("mine", "train", "eval")),
        *entries(MiningOptions, ("common",), ("mine", "train", "eval")),
    ]


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``--config FILE.yaml``: its keys (option names, with - or _) become the subcommand's defaults,
    so flags on the command line still override them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return
    import yaml

    try:
        with open(known.config, encoding="utf-8") as file:
            text = file.read()
        config = yaml.safe_load(text)
        root = yaml.compose(text)
    except OSError as error:
        raise ClpftError(f"{known.config}: cannot read ({error.strerror})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{known.config}:{mark.line + 1}" if mark else known.config
        raise ClpftError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from error
    if config is None:
        return
    if not isinstance(config, dict):
        raise ClpftError(f"{known.config}: expected a mapping of option names to values")
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    command = next((arg for arg in argv if arg in subparsers), None)
    if command is None:
        return
    sub = subparsers[command]
    actions = {a.dest: a for a in sub._actions}
    # a key is a flag's name (lr, penalty-weight) or its destination (learning_rate): both say the same option
    by_flag = {flag.lstrip("-").replace("-", "_"): a.dest for a in sub._actions for flag in a.option_strings}
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in root.value} if isinstance(root, yaml.MappingNode) else {}
    defaults = {}
    for key, value in config.items():
        where = f"{known.config}:{lines[str(key)]}" if str(key) in lines else known.config
        name = str(key).lstrip("-").replace("-", "_")
        dest = by_flag.get(name, name)
        if dest not in actions or dest in ("help", "config"):
            raise ClpftError(f"{where}: unknown option {key!r} for clpft {command}")
        actions[dest].required = False
        # "guard: false" sets the option; "no-guard: true", its negative flag's spelling, says the same
        negative = name != dest and actions[dest].nargs == 0 and actions[dest].const is False
        value = _config_value(actions[dest], key, value, where)
        defaults[dest] = (not value) if negative else value
    sub.set_defaults(**defaults)


def _config_value(action: argparse.Action, key: object, value: object, where: str) -> object:
    """A config file's value as the command line would have parsed it: a flag's value is true or false (YAML's
    booleans, not the string "false", which would count as true), a typed option's value goes through its
    type, and a value with choices must be one of them; anything else is a one-line error."""
    if action.nargs == 0:  # a flag: --x / --no-x
        if not isinstance(value, bool):
            raise ClpftError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if value is not None and action.type is not None:
        if isinstance(value, bool):
            raise ClpftError(f"{where}: {key} must be a value of its own, not {value!r}")
        try:
            value = action.type(str(value) if not isinstance(value, (int, float)) else value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            kind = {int: "a whole number", float: "a number"}.get(action.type)
            problem = f"must be {kind}, got {value!r}" if kind else str(error)
            raise ClpftError(f"{where}: {key} {problem}") from None
    if action.choices is not None and value is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ClpftError(f"{where}: {key} must be one of {choices}, got {value!r}")
    return value
