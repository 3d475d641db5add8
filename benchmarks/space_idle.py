"""CPU the Space's server spends on an open, idle page (the refresh timer), in CPU seconds per minute.

Starts ``app.py``'s UI in a child process on 127.0.0.1, opens it in headless Chromium (Debian's chromium +
chromedriver, as the browser test), waits for the page to settle, then reads the server process's CPU time
(utime + stime from /proc) over ``--seconds``. CPU time, not wall time, so a busy machine changes it little.

    python benchmarks/space_idle.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = """
import sys
from spaces.ui import build_demo
demo = build_demo(sys.argv[1])
demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[2]), quiet=True)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=20.0)
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    sys.path.insert(0, str(ROOT))
    from trainer.files import free_port

    port = free_port()
    root = tempfile.mkdtemp(prefix="space-idle-")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, root, str(port)], cwd=ROOT, env=env)
    driver = None
    try:
        import urllib.request

        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={root}/chrome"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(args.settle)
        c0, t0 = cpu_seconds(server.pid), time.time()
        time.sleep(args.seconds)
        c1, t1 = cpu_seconds(server.pid), time.time()
        used = c1 - c0
        print(f"server CPU over {t1 - t0:.0f} s with one idle page open: {used:.2f} CPU s "
              f"({100 * used / (t1 - t0):.1f}% of one core)")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
