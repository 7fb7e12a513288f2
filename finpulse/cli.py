"""The ``finpulse`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from finpulse import __version__
from finpulse.core.connections import async_redis, sync_redis
from finpulse.core.settings import Settings
from finpulse.core.stackstate import resolve_bootstrap, resolve_redis_url


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group()
@click.version_option(__version__, "--version", prog_name="finpulse", message="%(prog)s %(version)s")
@click.option("--log-level", default=os.environ.get("FINPULSE_LOG_LEVEL", "warning"), show_default=True,
              help="debug, info, warning or error (logs go to stderr)")
def main(log_level: str) -> None:
    """finpulse: financial-news risk signals (classify, aggregate, alert)."""
    _setup_logging(log_level)


# --- model -------------------------------------------------------------------------------------

@main.command()
@click.argument("texts", nargs=-1)
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              help="JSONL ({id, text}), CSV (text column) or plain text (one headline per line)")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="JSONL output (default stdout)")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False),
              help="where malformed lines go (default: OUTPUT.errors.jsonl, or stderr)")
@click.option("--model-dir", default=None, help="model artifact directory (default: bundled)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", default=32, show_default=True)
def classify(texts, input_path, output_path, errors_path, model_dir, device, batch_size) -> None:
    """Classify headlines given as arguments or in a file; prints one JSON object per text."""
    from tqdm import tqdm

    from finpulse.models import Classifier
    from finpulse.models.batchfile import read_rows

    if not texts and not input_path:
        raise click.UsageError("give TEXT arguments or --input FILE")
    clf = Classifier(model_dir, device=device, batch_size=batch_size)
    if texts:
        for t, r in zip(texts, clf.classify(list(texts)), strict=True):
            click.echo(json.dumps({"text": t, **r}, ensure_ascii=False))
        return
    out = open(output_path, "w", encoding="utf-8") if output_path else sys.stdout
    if errors_path is None and output_path:
        errors_path = output_path + ".errors.jsonl"
    err = open(errors_path, "w", encoding="utf-8") if errors_path else sys.stderr
    n_ok = n_bad = 0
    chunk: list = []

    def flush() -> None:
        nonlocal n_ok, n_bad
        results = clf.classify([row.text for row in chunk])
        for row, res in zip(chunk, results, strict=True):
            if "error" in res:
                n_bad += 1
                err.write(json.dumps({"line": row.line, "id": row.id, "error": res["error"]}) + "\n")
            else:
                n_ok += 1
                out.write(json.dumps({"id": row.id, **res}, ensure_ascii=False) + "\n")
        chunk.clear()

    try:
        with tqdm(unit="headline", file=sys.stderr, desc="classify") as bar:
            for row in read_rows(input_path):
                if row.error:
                    flush()  # keep output in input order
                    n_bad += 1
                    err.write(json.dumps({"line": row.line, "id": row.id, "error": row.error}) + "\n")
                    click.echo(f"line {row.line}: {row.error} (skipped)", err=True)
                    continue
                chunk.append(row)
                bar.update(1)
                if len(chunk) >= 1024:
                    flush()
            flush()
    finally:
        if out is not sys.stdout:
            out.close()
        if err is not sys.stderr:
            err.close()
    click.echo(f"classified={n_ok} errors={n_bad}" + (f" (see {errors_path})" if n_bad and errors_path else ""),
               err=True)


@main.command()
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="text,label CSV")
@click.option("--task", required=True, type=click.Choice(["topic", "sentiment"]))
@click.option("--variant", type=click.Choice(["int8", "fp16", "fp32", "torch"]), default="int8", show_default=True)
@click.option("--model-dir", default=None)
@click.option("--checkpoint", default="models/artifacts/checkpoint", show_default=True, help="for --variant torch")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def evaluate(data, task, variant, model_dir, checkpoint, as_json) -> None:
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix."""
    from finpulse.models.evaluate import decision_of, format_report, logits_fn
    from finpulse.models.evaluate import evaluate as run_eval

    # ONNX variants apply the manifest's decision rule, as the runtime does; the PyTorch checkpoint has none
    decision = decision_of(model_dir) if variant != "torch" else None
    rep = run_eval(data, task, logits_fn(variant, model_dir, checkpoint), decision)
    click.echo(json.dumps(rep, indent=2) if as_json else format_report(rep, task))


@main.command()
@click.option("--out-dir", default="models/artifacts/checkpoint", show_default=True)
@click.option("--epochs", default=5, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=8e-5, show_default=True)
@click.option("--seed", default=13, show_default=True)
@click.option("--limit", default=None, type=int, help="use only N examples per task (smoke runs)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0 = default)")
@click.option("--layer-lr-decay", default=1.0, show_default=True, help="per-layer lr factor (1 = off)")
@click.option("--ema-decay", default=0.0, show_default=True, help="weight EMA decay, e.g. 0.999 (0 = off)")
@click.option("--label-smoothing", default=0.0, show_default=True)
@click.option("--sentiment-weight", default=1.0, show_default=True, help="weight of the sentiment loss (topic: 1)")
@click.option("--train-word-embeddings", is_flag=True, help="also train the word-embedding table (frozen by default)")
@click.option("--teacher", default=None, type=click.Path(exists=True, file_okay=False),
              help="checkpoint to distil from (soft targets for both heads on every training text)")
@click.option("--distill-weight", default=0.5, show_default=True, help="weight of the distillation loss")
@click.option("--distill-temperature", default=2.0, show_default=True, help="softmax temperature of distillation")
@click.option("--base-encoder", default=None, type=click.Path(exists=True, file_okay=False),
              help="start from this encoder (a finpulse adapt output) instead of all-MiniLM-L6-v2")
@click.option("--rdrop-weight", default=0.0, show_default=True,
              help="R-Drop: weight of the consistency loss between two dropout passes (0 = off; doubles step cost)")
@click.option("--init-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="continue training this checkpoint (e.g. one from finpulse model checkpoint)")
@click.option("--news-repeat", default=0, show_default=True,
              help="add the news-style train split (data/news-dev) this many times (0 = off)")
@click.option("--headline-style", default=0.0, show_default=True,
              help="share of tweets rewritten in headline style each epoch (0 = off)")
@click.option("--news-select", is_flag=True, help="select the epoch on tweet dev slice + news-style dev split")
@click.option("--warmup-ratio", default=0.06, show_default=True)
@click.option("--patience", default=2, show_default=True, help="epochs without dev improvement before stopping")
@click.option("--fake-quant", is_flag=True,
              help="train through the export's int8 weight rounding (needed after finpulse model checkpoint)")
@click.option("--style-heads", is_flag=True,
              help="a second head per task for news-style text and a fitted style gate (needs --news-repeat)")
def train(out_dir, epochs, batch_size, lr, seed, limit, device, threads, layer_lr_decay, ema_decay,
          label_smoothing, sentiment_weight, train_word_embeddings, teacher, distill_weight,
          distill_temperature, base_encoder, rdrop_weight, init_from, news_repeat, headline_style,
          news_select, warmup_ratio, patience, fake_quant, style_heads) -> None:
    """Fine-tune the two-headed model (needs the train extra)."""
    from finpulse.models.train import TrainConfig
    from finpulse.models.train import train as run_train

    summary = run_train(TrainConfig(out_dir=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                    limit=limit, device=device, threads=threads, layer_lr_decay=layer_lr_decay,
                                    ema_decay=ema_decay, label_smoothing=label_smoothing,
                                    sentiment_weight=sentiment_weight,
                                    freeze_word_embeddings=not train_word_embeddings, teacher=teacher,
                                    distill_weight=distill_weight, distill_temperature=distill_temperature,
                                    base_encoder=base_encoder, rdrop_weight=rdrop_weight, init_from=init_from,
                                    news_repeat=news_repeat, headline_style=headline_style,
                                    news_select=news_select, warmup_ratio=warmup_ratio, patience=patience,
                                    fake_quant=fake_quant, style_heads=style_heads))
    click.echo(json.dumps({k: summary[k] for k in ("best_epoch", "train_seconds", "device")}))


@main.command()
@click.option("--out-dir", default="models/artifacts/encoder-tapt", show_default=True)
@click.option("--epochs", default=4, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=5e-5, show_default=True, help="peak learning rate of the encoder")
@click.option("--head-lr", default=5e-4, show_default=True, help="learning rate of the fresh MLM head")
@click.option("--head-warmup-steps", default=300, show_default=True, help="steps training the MLM head alone")
@click.option("--seed", default=13, show_default=True)
@click.option("--limit", default=None, type=int, help="use only N examples per task (smoke runs)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0 = default)")
def adapt(out_dir, epochs, batch_size, lr, head_lr, head_warmup_steps, seed, limit, device, threads) -> None:
    """Masked-LM pre-training on the training headlines (TAPT) before finpulse train --base-encoder."""
    from finpulse.models.adapt import AdaptConfig
    from finpulse.models.adapt import adapt as run_adapt

    summary = run_adapt(AdaptConfig(out_dir=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr,
                                    head_warmup_steps=head_warmup_steps, seed=seed, limit=limit, device=device,
                                    threads=threads))
    click.echo(json.dumps({"history": summary["history"], "train_seconds": summary["train_seconds"]}))


@main.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out-dir", required=True, help="checkpoint directory for the averaged model")
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0 = default)")
def soup(checkpoints, out_dir, threads) -> None:
    """Average fine-tuned checkpoints greedily by dev score (needs the train extra)."""
    from finpulse.models.soup import SoupError, greedy_soup

    try:
        summary = greedy_soup(checkpoints, out_dir, threads=threads)
    except SoupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"kept": summary["kept"], "dev_score": round(summary["dev_score"], 4),
                           "ingredients": {i["checkpoint"]: round(i["dev_score"], 4)
                                           for i in summary["ingredients"]}}))


@main.command()
@click.argument("start", type=click.Path(exists=True, file_okay=False))
@click.argument("tuned", type=click.Path(exists=True, file_okay=False))
@click.option("--out-dir", required=True, help="checkpoint directory for the chosen interpolation")
@click.option("--max-tweet-drop", default=0.005, show_default=True,
              help="how far the tweet dev slice's accuracy and macro-F1 may fall from START's")
@click.option("--guard", type=click.Choice(["all", "floors"]), default="all", show_default=True,
              help="guarded tweet dev metrics: all = both heads' accuracy and macro-F1; floors = the release "
                   "floors' metrics (topic accuracy, sentiment accuracy and macro-F1)")
@click.option("--alphas", default="0,0.25,0.5,0.625,0.75,0.875,1", show_default=True,
              help="interpolation weights tried (comma-separated; the first is the reference)")
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0 = default)")
def interpolate(start, tuned, out_dir, max_tweet_drop, guard, alphas, threads) -> None:
    """Weight-space interpolation START -> TUNED (WiSE-FT), chosen on dev data with int8 weights."""
    from finpulse.models.soup import GUARD_ALL, GUARD_FLOORS
    from finpulse.models.soup import interpolate as run_interpolate

    try:
        grid = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of numbers: {alphas!r}", param_hint="--alphas") from None
    if not grid or grid[0] != 0.0:
        raise click.BadParameter("the first alpha must be 0 (START itself, the guard's reference)",
                                 param_hint="--alphas")
    res = run_interpolate(start, tuned, out_dir, alphas=grid, max_tweet_drop=max_tweet_drop,
                          guard=GUARD_FLOORS if guard == "floors" else GUARD_ALL, threads=threads)
    click.echo(json.dumps({"alpha": res["alpha"], "candidates": [
        {"alpha": c["alpha"], "ok": c["ok"], "news_score": round(c["news_score"], 4),
         "tweet_sentiment": c["tweet_dev"]["sentiment"], "tweet_topic": c["tweet_dev"]["topic"]}
        for c in res["candidates"]]}, indent=1))


@main.command("choose-release")
@click.argument("start", type=click.Path(exists=True, file_okay=False))
@click.argument("tuned", type=click.Path(exists=True, file_okay=False))
@click.option("--reference", required=True, type=click.Path(exists=True, file_okay=False),
              help="the exported release in force (the base: models/artifacts); the guard's reference")
@click.option("--version", "version", required=True, help="model version of the new release")
@click.option("--out-dir", required=True, help="directory for the chosen release (must not exist)")
@click.option("--alphas", default="0.2,0.25,0.3,0.35,0.4,0.45,0.5", show_default=True,
              help="interpolation weights tried (comma-separated)")
@click.option("--max-drop", default=0.005, show_default=True,
              help="how far each guarded tweet dev metric may fall from the reference's, weights and "
                   "decision rule together")
@click.option("--work-dir", default=None, help="where the blends and their exports go")
def choose_release(start, tuned, reference, version, out_dir, alphas, max_drop, work_dir) -> None:
    """Export blends START -> TUNED and keep the best on news dev whose exported labels stay within one
    tweet dev allowance of the release in force (needs the train extra)."""
    from finpulse.models.release import choose_release as run_choose

    try:
        grid = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of numbers: {alphas!r}", param_hint="--alphas") from None
    if not grid:
        raise click.BadParameter("no alpha given", param_hint="--alphas")
    res = run_choose(start, tuned, out_dir, reference=reference, version=version, alphas=grid, max_drop=max_drop,
                     work_dir=work_dir)
    click.echo(json.dumps(res, indent=1))
    if res["alpha"] is None:
        raise click.ClickException("no blend stays within the tweet dev allowance of the reference; nothing written")


@main.command()
@click.option("--checkpoint", default="models/artifacts/checkpoint", show_default=True)
@click.option("--out-dir", default=None, help="artifact directory (default: models/artifacts)")
@click.option("--version", "version", required=True, help="model version, e.g. minilm-mt-2026.11.22")
@click.option("--dynamic", is_flag=True, help="keep per-batch activation scales (labels then depend on the batch)")
@click.option("--no-decision", is_flag=True, help="do not fit the decision rule (temperatures, sentiment bias)")
@click.option("--reference", default=None, type=click.Path(exists=True, file_okay=False),
              help="the exported release in force: the decision rule's tweet dev allowance is counted from it")
def export(checkpoint, out_dir, version, dynamic, no_decision, reference) -> None:
    """Export the checkpoint to ONNX (fp32 -> optimised -> int8, static scales), fit the decision rule,
    write the manifest. Give --out-dir <model directory>/<version> to add it as a promotable version."""
    from finpulse.models.export import ARTIFACT_DIR
    from finpulse.models.export import export as run_export

    manifest = run_export(checkpoint, out_dir or ARTIFACT_DIR, version=version, static=not dynamic,
                          decide=not no_decision, reference_dir=reference)
    click.echo(json.dumps(manifest["files"], indent=2))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures as one JSON object")
@click.option("--quick", is_flag=True, help="fewer headlines and repeats (smoke run)")
@click.option("--no-peer", is_flag=True, help="skip the Hugging Face pipeline comparison")
def bench(as_json, quick, no_peer) -> None:
    """Headlines/s through Classifier (fp32, int8; batch 1/8/32/128) and the HF-pipeline peer."""
    from finpulse.models.bench import run_bench

    res = run_bench(quick=quick, peer=not no_peer)
    click.echo(json.dumps(res, indent=2) if as_json else res["table"])


# --- pipeline ----------------------------------------------------------------------------------

@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--namespace", default=None, help="run namespace (default: FINPULSE_NAMESPACE or live)")
@click.argument("faust_args", nargs=-1, type=click.UNPROCESSED)
def worker(namespace, faust_args) -> None:
    """Run the stream worker (Faust): classify, aggregate, alert, deliver."""
    from finpulse.stream.resilience import EXIT_FAULT, EXIT_INTERRUPTED

    try:  # until Faust installs its own handlers, a Ctrl-C is a stop before start, not a crash
        from finpulse.stream.app import create_app

        settings = Settings(namespace=namespace) if namespace else Settings()
        _wait_for_dependencies(settings)
        _rewind_if_planned(settings)
        app = create_app(settings)
    except KeyboardInterrupt:
        logging.getLogger("finpulse.worker").warning("interrupted before the worker started; nothing consumed")
        sys.exit(EXIT_INTERRUPTED)

    # Faust's -l accepts crit / error / warn / info / debug
    faust_level = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "crit"}.get(
        logging.getLevelName(logging.getLogger().level), "warn")
    sys.argv = ["finpulse-worker", "worker", "--without-web", "-l", faust_level, *faust_args]
    from finpulse.stream.app import current

    try:
        app.main()
    finally:
        faults = current().faults
        if faults:  # the worker stopped itself: say so in the exit status, so it is restarted
            logging.getLogger("finpulse.worker").critical("worker stopped by a fault: %s", "; ".join(faults))
            sys.exit(EXIT_FAULT)


def _wait_for_dependencies(settings: Settings) -> None:
    """Before starting: wait (up to ``infra_retry_s``) for the broker and Redis to answer, as the running
    worker waits out an outage, instead of crashing when started during a broker restart."""
    from finpulse.stack import StackError, wait_for_listener, wait_for_redis
    from finpulse.stream.resilience import EXIT_FAULT

    log = logging.getLogger("finpulse.worker")
    bootstrap, redis_url = resolve_bootstrap(settings), resolve_redis_url(settings)
    for what, wait in (("the Kafka broker", lambda t: wait_for_listener(bootstrap, timeout=t)),
                       ("Redis", lambda t: wait_for_redis(redis_url, timeout=t))):
        try:
            wait(2.0)
            continue
        except StackError:
            log.warning("waiting up to %.0f s for %s to answer", settings.infra_retry_s, what)
        try:
            wait(settings.infra_retry_s)
        except StackError as exc:
            log.critical("not starting: %s", exc)
            sys.exit(EXIT_FAULT)


def _rewind_if_planned(settings: Settings) -> None:
    """Before consuming: carry out a rewind plan left by a worker that found a reset log."""
    from finpulse.stream.logwatch import apply_rewind
    from finpulse.stream.resilience import EXIT_FAULT

    resolved = settings.with_overrides(kafka_bootstrap=resolve_bootstrap(settings))  # no broker: say so plainly
    redis_url = resolve_redis_url(settings)
    try:
        apply_rewind(resolved, redis_url, timeout_s=3 * settings.session_timeout_s + 30)
    except Exception as exc:  # noqa: BLE001 - consuming now would skip the messages of the reset log
        logging.getLogger("finpulse.worker").critical("cannot rewind after a Kafka log reset, not starting: %s", exc)
        sys.exit(EXIT_FAULT)


@main.command()
@click.option("--namespace", default=None, help="the namespace to show (default: FINPULSE_NAMESPACE or live); a "
              "backtest's kept namespace works the same way")
@click.option("--host", default=None, help="bind address (default: FINPULSE_SERVE_HOST, 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default: FINPULSE_SERVE_PORT, 8050; 0 = any free port)")
def serve(namespace: str | None, host: str | None, port: int | None) -> None:
    """Serve the dashboard, the JSON API (/api/, /api/openapi.json) and /metrics of a namespace."""
    import asyncio

    from finpulse.serve import serve_forever

    settings = Settings(namespace=namespace) if namespace else Settings()
    settings = settings.with_overrides(**{k: v for k, v in (("serve_host", host), ("serve_port", port))
                                          if v is not None})
    try:
        asyncio.run(serve_forever(settings, on_ready=lambda url: click.echo(f"dashboard: {url}/", err=True)))
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("role", type=click.Choice(["worker", "crawler"]))
@click.option("--max-age", type=float, default=None,
              help="seconds since the last heartbeat past which the process counts as dead (default 30)")
@click.option("--namespace", default=None, help="run namespace (default: FINPULSE_NAMESPACE or live)")
def health(role: str, max_age: float | None, namespace: str | None) -> None:
    """Exit 0 if ROLE's process on this machine beat recently, else 1 (a container health check)."""
    from finpulse.core.heartbeat import DEFAULT_MAX_AGE_S, heartbeat_age, heartbeat_path

    settings = Settings(namespace=namespace) if namespace else Settings()
    path = heartbeat_path(settings, role)
    age = heartbeat_age(path)
    limit = DEFAULT_MAX_AGE_S if max_age is None else max_age
    if age is None:
        click.echo(f"unhealthy: no heartbeat at {path}")
        sys.exit(1)
    if age > limit:
        click.echo(f"unhealthy: last heartbeat {age:.0f} s ago (> {limit:.0f} s) at {path}")
        sys.exit(1)
    click.echo(f"healthy: last heartbeat {age:.1f} s ago")


@main.group()
def stack() -> None:
    """The embedded development stack (Tansu broker + redis-server)."""


@stack.command("up")
@click.option("--broker", type=click.Choice(["tansu", "kafka"]), default="tansu", show_default=True,
              help="tansu: in-memory, starts in under a second; kafka: Apache Kafka 4 (KRaft, needs Java 17+, "
                   "fetched from Maven Central on first use)")
@click.option("--ephemeral", is_flag=True,
              help="Redis without persistence (faster; a Redis restart loses everything). Default: AOF, "
                   "fsync every second")
def stack_up_cmd(broker: str, ephemeral: bool) -> None:
    """Start the stack in the background and print its addresses as env vars."""
    from finpulse.stack import stack_up

    state = stack_up(broker=broker, ephemeral=ephemeral)
    click.echo(f"export FINPULSE_KAFKA_BOOTSTRAP={state['kafka_bootstrap']}")
    click.echo(f"export FINPULSE_REDIS_URL={state['redis_url']}")


@stack.command("down")
def stack_down_cmd() -> None:
    """Stop the stack started by `finpulse stack up`."""
    from finpulse.stack import stack_down

    state = stack_down()
    click.echo("stopped" if state else "no stack running")


@main.command()
@click.option("--once", is_flag=True, help="exit 0 after the sample is processed, with a summary line")
@click.option("--sample", default=None, help="JSONL of raw news (default: the bundled sample)")
@click.option("--quiet", is_flag=True, help="do not print every scored headline")
def demo(once, sample, quiet) -> None:
    """Embedded stack + worker + a replayed sample with a negative burst; prints headlines and alerts."""
    import signal

    from finpulse.demo import run_demo

    def stop_like_ctrl_c(signum, frame) -> None:
        # `kill` or a closed terminal reaches the demo alone: stop the worker and the stack as a
        # Ctrl-C does, instead of dying at once and leaving them running without a parent
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_like_ctrl_c)
    try:
        summary = run_demo(once=once, sample=sample, quiet=quiet)
    except KeyboardInterrupt:  # a second Ctrl-C during the orderly stop, or one before the demo started
        click.echo("interrupted", err=True)
        sys.exit(130)
    if once:
        click.echo(f"processed={summary['processed']} alerts={summary['alerts']} "
                   f"dead_lettered={summary['dead_lettered']} webhooks_verified={summary['webhooks_verified']}")
        sys.exit(0 if summary["ok"] else 1)


# --- ingestion ---------------------------------------------------------------------------------

@main.command()
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="feeds TOML (default: the sample feeds shipped in the package, config/feeds.toml in a checkout)")
@click.option("--once", is_flag=True, help="poll every feed once, print per-feed counts, exit")
@click.option("--output", "output_path", default=None,
              help="write news.raw messages to this JSONL file instead of Kafka (no broker needed)")
def crawl(config_path, once, output_path) -> None:
    """Crawl RSS/Atom feeds into news.raw (Kafka), or into a JSONL file with --output."""
    import asyncio
    import signal

    from finpulse.core.settings import shipped_file
    from finpulse.ingest import crawler

    config_path = config_path or str(shipped_file("feeds.toml"))
    # a file sink needs no broker: only Kafka output resolves one (setting, else `finpulse stack up`)
    settings = Settings() if output_path else _with_stack(Settings(), need_redis=False)
    if once:
        report = asyncio.run(crawler.crawl_once(config_path, settings, output=output_path))
        click.echo(report.format())
        return

    async def forever() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await crawler.crawl_forever(config_path, settings, output=output_path, stop=stop, serve_ops=True)

    asyncio.run(forever())


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--speed", type=float, default=None, help="N x real time (default: as fast as possible)")
@click.option("--as-fast-as-possible", "afap", is_flag=True, help="no pacing (the default)")
@click.option("--from", "from_", default=None, help="only rows at or after this RFC 3339 time / date")
@click.option("--to", "to", default=None, help="only rows before this RFC 3339 time / date")
@click.option("--namespace", default=None, help="put the run in its own topics, group and Redis prefix")
@click.option("--title-col", default=None)
@click.option("--time-col", default=None)
@click.option("--url-col", default=None)
@click.option("--source-col", default=None)
@click.option("--ticker-col", default=None)
@click.option("--no-dedup", is_flag=True,
              help="do not mark later versions of an id, syndicated copies and near duplicates (already de-duplicated)")
def replay(path, speed, afap, from_, to, namespace, title_col, time_col, url_col, source_col, ticker_col,
           no_dedup) -> None:
    """Replay historical headlines into news.raw in event-time order."""
    from finpulse.ingest.replay import replay as run_replay

    settings = _with_stack(Settings(), need_redis=False)
    if namespace:
        settings = settings.with_overrides(namespace=namespace)
    cols = {k: v for k, v in dict(title_col=title_col, time_col=time_col, url_col=url_col, source_col=source_col,
                                   ticker_col=ticker_col).items() if v is not None}
    result = run_replay(path, settings, speed=None if afap else speed, from_ts=from_, to_ts=to, dedup=not no_dedup,
                        **cols)
    for line, reason in result.bad:
        click.echo(f"line {line}: {reason} (skipped)", err=True)
    click.echo(result.summary())


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--rules", "rules_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="rules file (default: FINPULSE_RULES_FILE, else the shipped config/rules.toml)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--namespace", default=None, help="default: bt-<hash of file and rules>-<time>")
@click.option("--scored-input", is_flag=True,
              help="rows are pre-scored (topic, sentiment, sentiment_score): skip the classifier")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="seconds to wait for processing (default 90 + 0.05 per row)")
@click.option("--keep", is_flag=True, help="keep the namespace's Redis keys afterwards")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@click.option("--json", "as_json", is_flag=True, help="print the whole summary as JSON")
@click.option("--title-col", default=None)
@click.option("--time-col", default=None)
@click.option("--ticker-col", default=None)
@click.option("--tz", default="UTC", show_default=True, help="zone of naive and date-only timestamps")
@click.option("--date-only", type=click.Choice(["start", "end"]), default="start", show_default=True,
              help="a date-only row is at 00:00 (start) or 23:59:59.999 (end, no look-ahead) of its day")
@click.option("--no-dedup", is_flag=True,
              help="do not mark later versions of an id, syndicated copies and near duplicates (already de-duplicated)")
@click.option("--events", "events_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="CSV of known events (stream,event,start,end,...): score the alerts against them")
@click.option("--events-stream", default=None,
              help="the stream whose events apply (default: PATH's stem); events of other streams are ignored")
@click.option("--events-grace", "events_grace_s", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="seconds after an event's end during which an alert still matches it")
@click.option("--model-version", default=None,
              help="score with this model version (default: the version in force in the live namespace)")
def backtest(path, rules_path, out_dir, namespace, scored_input, timeout_s, keep, quiet, as_json, title_col,
             time_col, ticker_col, tz, date_only, no_dedup, events_path, events_stream, events_grace_s,
             model_version) -> None:
    """Run a file of history through the real pipeline and write alerts, time series, summary, report.

    With --events, the alerts are scored against the known events of the file's stream (summary.json:
    "evaluation"). Exits 1 when processing did not complete in time (or nothing could be produced).
    """
    from finpulse.backtest import BacktestError, run_backtest, summary_line

    cols = {k: v for k, v in dict(title_col=title_col, time_col=time_col, ticker_col=ticker_col).items()
            if v is not None}
    rules_path = rules_path or Settings().rules_file
    try:
        summary = run_backtest(path, rules_path, out_dir, namespace=namespace, scored_input=scored_input,
                               timeout_s=timeout_s, keep=keep, progress=not quiet, tz=tz, date_only=date_only,
                               dedup=not no_dedup, events=events_path, events_stream=events_stream,
                               events_grace_s=events_grace_s, model_version=model_version, **cols)
    except BacktestError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2) if as_json else summary_line(summary))
    sys.exit(0 if summary["ok"] else 1)


def _with_stack(settings, need_redis: bool = True):
    """Fill empty broker / Redis addresses from a running `finpulse stack up`."""
    updates = {}
    if not settings.kafka_bootstrap:
        updates["kafka_bootstrap"] = resolve_bootstrap(settings)
    if need_redis and not settings.redis_url:
        updates["redis_url"] = resolve_redis_url(settings)
    return settings.with_overrides(**updates) if updates else settings


@main.group()
def model() -> None:
    """Model versions: list, add, promote, rollback, shadow (the version in force is shared by all workers)."""


def _model_ctx(namespace: str | None, need_redis: bool = True):
    from finpulse.models.registry import ModelRegistry

    settings = Settings(namespace=namespace) if namespace else Settings()
    if need_redis and not settings.redis_url:
        settings = settings.with_overrides(redis_url=resolve_redis_url(settings))
    return settings, ModelRegistry.from_settings(settings)


def _model_run(settings, base_version: str, op):
    """Run ``op(ModelControl)`` against the namespace's Redis and return its result."""
    import asyncio

    from finpulse.models.exceptions import ModelVersionError
    from finpulse.models.lifecycle import ModelControl

    async def run():
        client = async_redis(settings.redis_url)
        try:
            return await op(ModelControl(client, settings.namespace, base_version))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except ModelVersionError as exc:
        raise click.ClickException(str(exc)) from None


_NS_OPTION = click.option("--namespace", default=None, help="run namespace (default: FINPULSE_NAMESPACE or live)")


@model.command("list")
@_NS_OPTION
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def model_list(namespace: str | None, as_json: bool) -> None:
    """The base model, the bundled versions and the model directory's; which is in force and which is the shadow."""
    settings, reg = _model_ctx(namespace)
    versions = reg.versions()

    async def read(ctl):
        return await ctl.state(), await ctl.events(10)

    (active, shadow), events = _model_run(settings, versions[0].version, read)
    rows = [{**v.summary(), "in_force": v.version == active, "shadow": v.version == shadow} for v in versions]
    if as_json:
        click.echo(json.dumps({"models_dir": str(reg.models_dir), "in_force": active, "shadow": shadow,
                               "versions": rows, "events": events}, indent=2))
        return
    click.echo(f"model directory: {reg.models_dir}")
    for r in rows:
        mark = "*" if r["in_force"] else "s" if r["shadow"] else " "
        m = r["metrics"]
        fig = (f"topic {m['topic']['accuracy']:.3f}  sentiment {m['sentiment']['accuracy']:.3f}"
               if m.get("topic") and m.get("sentiment") else "")
        kind = "base" if r["base"] else "bundled" if r["bundled"] else ""
        click.echo(f"{mark} {r['version']:<32} {kind:<7}  {fig}")
    if active not in {r["version"] for r in rows}:
        click.echo(f"! the version in force, {active}, is not in this model directory", err=True)
    click.echo("(* in force, s shadow)")


@model.command("add")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
def model_add(src: str) -> None:
    """Copy the exported model in SRC (manifest.json + files) into the model directory."""
    from finpulse.models.exceptions import ModelError

    _settings, reg = _model_ctx(None, need_redis=False)
    try:
        v = reg.add(src)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {v.version} -> {v.path}")


@model.command("promote")
@click.argument("version")
@_NS_OPTION
@click.option("--reason", default="", help="why (kept in the event log)")
def model_promote(version: str, namespace: str | None, reason: str) -> None:
    """Put VERSION in force: every worker switches to it at its next batch."""
    from finpulse.models.exceptions import ModelError

    settings, reg = _model_ctx(namespace)
    try:
        reg.get(version)  # exists here and its files match the manifest
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    ev = _model_run(settings, reg.base_version(),
                    lambda ctl: ctl.promote(version, by=_operator(), reason=reason))
    click.echo(f"promoted {ev['to']} (was {ev['from']}); workers switch at their next batch")


@model.command("rollback")
@_NS_OPTION
@click.option("--reason", default="", help="why (kept in the event log)")
def model_rollback(namespace: str | None, reason: str) -> None:
    """Put the previously promoted version (or the base model) back in force."""
    settings, reg = _model_ctx(namespace)
    ev = _model_run(settings, reg.base_version(), lambda ctl: ctl.rollback(by=_operator(), reason=reason))
    click.echo(f"rolled back {ev['from']} -> {ev['to']}; workers switch at their next batch")


@model.command("shadow")
@click.argument("version", required=False)
@_NS_OPTION
@click.option("--off", is_flag=True, help="stop shadow scoring")
def model_shadow(version: str | None, namespace: str | None, off: bool) -> None:
    """Score all traffic with VERSION too (never published) and count its agreement with the version in force."""
    from finpulse.models.exceptions import ModelError

    if off == bool(version):
        raise click.UsageError("give a VERSION or --off")
    settings, reg = _model_ctx(namespace)
    if version:
        try:
            reg.get(version)
        except ModelError as exc:
            raise click.ClickException(str(exc)) from None
    _model_run(settings, reg.base_version(), lambda ctl: ctl.set_shadow(version))
    click.echo(f"shadow: {version}" if version else "shadow scoring off")


@model.command("shadow-report")
@_NS_OPTION
@click.option("--shadow", "shadow_version", default=None, help="shadow version (default: the current shadow)")
@click.option("--in-force", "active_version", default=None, help="compared with (default: the version in force)")
def model_shadow_report(namespace: str | None, shadow_version: str | None, active_version: str | None) -> None:
    """How often the shadow version's labels agree with the published ones (JSON)."""
    settings, reg = _model_ctx(namespace)

    async def report(ctl):
        active, shadow = await ctl.state()
        sv, av = shadow_version or shadow, active_version or active
        if not sv:
            raise click.ClickException("no shadow version set; give --shadow")
        return await ctl.agreement(sv, av)

    click.echo(json.dumps(_model_run(settings, reg.base_version(), report), indent=2))


@model.command("checkpoint")
@click.argument("version", required=False)
@click.option("--out-dir", required=True, help="checkpoint directory to write (for finpulse train --init-from)")
def model_checkpoint(version: str | None, out_dir: str) -> None:
    """Rebuild a PyTorch training checkpoint from VERSION's int8 file (default: the base model; needs the
    train extra), to continue training a shipped model whose fp32 checkpoint was not kept."""
    from finpulse.models.data import load_split
    from finpulse.models.recover import checkpoint_from_int8

    _settings, reg = _model_ctx(None, need_redis=False)
    path = reg.get(version).path if version else None
    texts = [e.text for e in load_split("sentiment", "train")[:300]]
    click.echo(json.dumps(checkpoint_from_int8(out_dir, path, check_texts=texts), indent=2))


def _operator() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@main.group()
def topics() -> None:
    """Kafka topic administration."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic of the namespace (idempotent); used by docker-compose's init-topics."""
    from finpulse.ingest.producer import ensure_topics

    settings = _with_stack(Settings(), need_redis=False)
    created = ensure_topics(settings, settings.all_topics())
    click.echo(f"created: {', '.join(created) or 'none (all exist)'}")


@main.group()
def state() -> None:
    """Backup and restore of the namespace's Redis state, tied to the consumer group's offsets."""


def _state_summary(res) -> str:
    parts = ", ".join(f"{t}: {dict(sorted(ps.items()))}" for t, ps in sorted(res.offsets.items())) or "none"
    return f"{res.keys} keys of namespace {res.namespace}; offsets {parts}"


@state.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--namespace", default=None, help="run namespace (default: FINPULSE_NAMESPACE or live)")
@click.option("--live", is_flag=True, help="allow a backup while workers run (a restore may then count a "
                                           "message processed during the dump twice)")
def state_backup(path: str, namespace: str | None, live: bool) -> None:
    """Write Redis state + committed offsets to PATH (gzip JSON lines). Stop the workers first."""
    from finpulse.state import StateError, backup

    settings = _with_stack(Settings(namespace=namespace) if namespace else Settings())
    try:
        res = backup(settings, path, live=live)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backed up {_state_summary(res)} -> {res.path}")


@state.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--namespace", default=None, help="run namespace (default: FINPULSE_NAMESPACE or live)")
@click.option("--replace", is_flag=True, help="delete the namespace's keys already in Redis first")
def state_restore(path: str, namespace: str | None, replace: bool) -> None:
    """Load PATH into Redis and rewind the consumer group to its offsets; start the workers to replay."""
    from finpulse.state import StateError, restore

    settings = _with_stack(Settings(namespace=namespace) if namespace else Settings())
    try:
        res = restore(settings, path, replace=replace)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"restored {_state_summary(res)}; {res.replay} messages to replay when the workers start")


def _redis_url() -> str:
    """``FINPULSE_REDIS_URL``, else the Redis of a running ``finpulse stack up``."""
    settings = Settings()
    return settings.redis_url or resolve_redis_url(settings)


@state.command("namespaces")
def state_namespaces() -> None:
    """List the namespaces that have keys in Redis, with their key counts."""

    from finpulse.core.codec import as_str

    client = sync_redis(_redis_url())
    counts: dict[str, int] = {}
    try:
        for key in client.scan_iter(match="finpulse:*", count=1000):
            ns = as_str(key).split(":", 2)[1]
            counts[ns] = counts.get(ns, 0) + 1
    finally:
        client.close()
    for ns, n in sorted(counts.items()):
        click.echo(f"{ns}\t{n}")


@state.command("delete")
@click.argument("namespace")
@click.option("--yes-delete-live", is_flag=True, help="required to delete the live namespace")
def state_delete(namespace: str, yes_delete_live: bool) -> None:
    """Delete every Redis key of NAMESPACE (e.g. a backtest run with --keep)."""
    import asyncio

    from finpulse.alerts.store import delete_namespace

    url = _redis_url()

    async def run() -> int:
        client = async_redis(url)
        try:
            return await delete_namespace(client, namespace, allow_live=yes_delete_live)
        finally:
            await client.aclose()

    try:
        removed = asyncio.run(run())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"deleted {removed} keys of namespace {namespace}")


# --- alerts ------------------------------------------------------------------------------------

@main.group()
def alerts() -> None:
    """Alert delivery tools."""


@alerts.command("test-webhook")
@click.argument("url")
@click.option("--secret", default=None, help="signing secret (default: FINPULSE_WEBHOOK_SECRET)")
@click.option("--timeout", default=10.0, show_default=True)
@click.option("--internal", is_flag=True, help="allow a private, loopback or link-local receiver")
def test_webhook(url, secret, timeout, internal) -> None:
    """Send a signed sample alert to URL and report the outcome."""
    import asyncio

    from finpulse.alerts.exceptions import ConfigError
    from finpulse.alerts.sender import send_test_webhook

    secret = secret or os.environ.get("FINPULSE_WEBHOOK_SECRET")
    if not secret:
        raise click.UsageError("give --secret or set FINPULSE_WEBHOOK_SECRET")
    try:
        outcome = asyncio.run(send_test_webhook(url, secret, timeout=timeout, internal=internal))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(outcome, indent=2))
    sys.exit(0 if outcome.get("ok") else 1)


if __name__ == "__main__":
    main()
