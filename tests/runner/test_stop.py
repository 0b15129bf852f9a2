"""Signals and the driver's exit: what a signal does once Ray is shut down, and during the
interpreter's teardown after the command's outcome is decided."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_a_signal_during_the_teardown_exits_with_the_decided_code_and_says_so():
    """After a stop (130) a second SIGTERM says so and keeps 130; after a finished command (0) the
    code stays 0, instead of the default handler's death by SIGTERM (-15)."""
    for code, line in ((130, "raypair: SIGTERM again: exiting now"), (0, "raypair: SIGTERM: exiting now")):
        out = _python(f"""
            import os, signal, time
            from raypair.runner.stop import exit_at_next_signal
            exit_at_next_signal({code})
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            print("not stopped")
        """)
        assert (out.returncode, out.stderr.strip()) == (code, line), (out.returncode, out.stdout, out.stderr)


@pytest.mark.ray
def test_the_drivers_sigterm_handler_outlives_ray_shutdown():
    """Ray's core worker reset SIGTERM to the default action in ray.shutdown, under Python's own
    handler: a stopped driver signalled again while it shut Ray down died as killed (-15), not
    with exit 130 (the flaky 'twice during Tune' case). The driver's handler must still run."""
    out = _python("""
        import os, signal, ray
        from raypair.runner.cluster import start_ray
        start_ray(None, [])
        signal.signal(signal.SIGTERM, lambda *a: print("handler ran", flush=True))
        ray.shutdown()
        os.kill(os.getpid(), signal.SIGTERM)
        print("alive", flush=True)
    """, timeout=240)
    assert out.returncode == 0 and out.stdout.split() == ["handler", "ran", "alive"], (out.returncode, out.stdout,
                                                                                      out.stderr[-2000:])
