"""``derelayl-train --help``: the page of ``conf/hydra/help/derelayl.yaml``, drawn without Hydra's
help machinery (which copies the whole config store once per group option, seconds on this
config), from one listing of ``conf/`` and one composition of the config asked for."""

from __future__ import annotations

from pathlib import Path

HELP_FLAGS = ("--help", "-h")


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def config_groups(conf: Path) -> str:
    """``group: option, ...`` for each group a user chooses (the top-level folders of ``conf/``;
    nested ones such as ``knobs/algorithm`` are picked by the config itself)."""
    lines = []
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if options:
            lines.append(f"{group.name}: {', '.join(options)}")
    return "\n".join(lines) + "\n"


def resolved_config(argv: list[str]) -> str:
    """The config of this command line (its overrides applied, interpolations left as written),
    or one line on why it does not compose."""
    from omegaconf import OmegaConf

    from derelayl.cli._compose import compose_train_config

    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        return OmegaConf.to_yaml(compose_train_config(overrides))
    except Exception as err:  # the page still helps; the run itself would say the same
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"(this command line does not compose: {first})\n"


def render(conf: Path, argv: list[str]) -> str:
    from omegaconf import OmegaConf

    page = OmegaConf.to_container(OmegaConf.load(conf / "hydra/help/derelayl.yaml"))
    assert isinstance(page, dict)
    header = page["header"].replace("${hydra.help.app_name}", page["app_name"])
    return (
        page["template"]
        .replace("${hydra.help.header}", header)
        .replace("${hydra.help.footer}", page["footer"])
        .replace("$APP_CONFIG_GROUPS", config_groups(conf))
        .replace("$CONFIG", resolved_config(argv))
    )
