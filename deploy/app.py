#!/usr/bin/env python3
"""CDK entry point (`cdk synth` runs this; `python deploy/app.py` synthesises too)."""

import os
import sys
from pathlib import Path

# Node 20 is past end of life for jsii; the banner is noise in every synth.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backsync_stack import make_app  # noqa: E402

if __name__ == "__main__":
    app, _ = make_app(outdir=os.environ.get("CDK_OUTDIR") or str(Path(__file__).parent / "cdk.out"))
    app.synth()
