"""``mdctr data import`` (DVC-version raw data, push to S3) and ``mdctr data validate`` (the GX gate)."""

from __future__ import annotations

from pathlib import Path

import typer

from mdctr.cli.common import datasets_dir, user_errors


def register(app: typer.Typer) -> None:
    """Add the commands to the ``data`` typer app."""

    @app.command("import")
    def import_cmd(
        source: Path | None = typer.Option(
            None, "--source", "-s", help="Datasets root (default $DATASETS_DIR)."
        ),
        datasets: str = typer.Option("", "--datasets", help="Comma-separated names (default: all present)."),
        repo: Path = typer.Option(Path("."), "--repo", help="git + DVC repository holding data.dvc."),
        push: bool = typer.Option(True, "--push/--no-push", help="Push to the default DVC remote."),
    ) -> None:
        """Copy raw datasets into data/, `dvc add data`, push; then commit data.dvc to make it a version."""
        from mdctr.versioning import VersioningError, import_data

        names = [n.strip() for n in datasets.split(",") if n.strip()] or None
        try:
            version = import_data(source or datasets_dir(), repo, names, push=push)
        except VersioningError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        where = f"pushed to {version.remote}" if version.pushed else "not pushed"
        typer.echo(
            f"data version {version.md5}: {version.nfiles} files, {version.size} bytes, "
            f"datasets {', '.join(version.datasets)}; {where}. Commit {repo / 'data.dvc'} to record it."
        )

    @app.command("validate")
    def validate_cmd(
        dataset: str = typer.Option(..., "--dataset", "-d", help="Registered dataset name."),
        source: Path | None = typer.Option(
            None, "--source", "-s", help="Raw data directory (default $DATASETS_DIR)."
        ),
        report_dir: Path = typer.Option(
            Path("runs/validation"), "--report-dir", help="Where the reports go."
        ),
    ) -> None:
        """Run the schema-derived Great Expectations suite; exit status 1 when any expectation fails."""
        from mdctr.validation import validate_dataset

        # unreadable files and a bad schema.yaml come back as a failed report; what is left (an unknown
        # dataset name, bad options) is one line too, never a traceback
        with user_errors():
            result = validate_dataset(dataset, source or datasets_dir(), report_dir)
        for o in result.results:
            mark = (
                typer.style("PASS", fg=typer.colors.GREEN)
                if o.success
                else typer.style("FAIL", fg=typer.colors.RED)
            )
            detail = "" if o.success else f" — {o.message}"
            typer.echo(f"{mark} {o.type} [{o.column}] {o.why}{detail}")
        status = "passed" if result.success else f"FAILED ({result.n_failed} of {len(result.results)})"
        typer.echo(f"{dataset}: {result.rows} rows, validation {status}; report {result.html_path}")
        if not result.success:
            raise typer.Exit(1)
