"""The command line and the runs it drives: ``clpft mine | train | eval | run | ablation``.

Owns: the parser built from the declared options (``parser``), parsed options and ``--config`` YAML turned back
into them (``settings``), logging and ``--quiet`` (``console``), one stage per subcommand with atomic outputs
(``stages``), ``clpft run`` top to bottom (``pipeline``) and the saved model's card (``model_card``).
May import every other part of clpft: it is the top of the dependency graph; only clpft.ablation imports from
it (the parser, to read the options of the subcommands its rows run).
"""

from clpft.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
