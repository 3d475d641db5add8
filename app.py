"""Hugging Face Space entry point: `python app.py` (or the Space runtime) serves the UI."""

from spaces.ui import build_demo

demo = build_demo()

if __name__ == "__main__":
    # several visitors poll and click at once; the job pool caps the pipeline jobs themselves
    demo.queue(default_concurrency_limit=8).launch()
