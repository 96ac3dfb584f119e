"""``geoseg run``: the stages of a pipeline file."""

from __future__ import annotations

import click


@click.command(name="run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Run every stage, even when up to date.")
@click.option("--from", "start", metavar="STAGE", default=None, help="Run from this stage on.")
def run_pipeline(pipeline, force, start):
    """Run the stages of a pipeline YAML file (see pipelines/README.md).

    A stage is skipped while its outputs exist and its options and input files are those of
    its last run (recorded beside its outputs).

    \b
    Examples:
      $ geoseg run pipelines/demo.yaml
      $ geoseg run pipelines/demo.yaml --from predict
    """
    from geoseg.cli.pipeline import run_pipeline as run

    def report(stage, status):
        if status == "skipped":
            click.echo(f"[{stage.name}] up to date, skipped (--force to run it)")
        else:
            click.echo(f"[{stage.name}] geoseg {stage.name} {' '.join(stage.args)}")

    geoseg_group = click.get_current_context().find_root().command
    run(pipeline, geoseg_group, force=force, start=start, report=report)
