"""Three ways to make a redline of two versions of our letter, side by side.

For four changes of terms (the hourly rate; a date added to the cancelled grants; a boolean
that drops a sentence; a term printed in the page header, on a copy of the template given a
header), each engine compares the two rendered .docx files; the table gives its median time
and the words it marked (the deleted and inserted texts of each part) against the words that
did change:

* ``word diff``: :func:`workflow.redline.redline_docx`, in this process (the baseline);
* ``LibreOffice compare``: Edit > Track Changes > Compare Document over UNO
  (``.uno:CompareDocuments``), in a LibreOffice of its own, saved as .docx;
* ``python-redlines``: its Docxodus engine (a .NET program inside the wheel), run by the
  Python given with ``--python-redlines-python`` (it is no dependency of Counterpart:
  ``python3 -m venv /tmp/pr && /tmp/pr/bin/pip install 'python-redlines[docxodus]'``).

Not a test: the machine is noisy, so read the ratios.

    .venv/bin/python bench/bench_redline.py [--runs 5] [--python-redlines-python /tmp/pr/bin/python]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import docx
from lxml import etree

from workflow.redline import redline_docx
from workflow.render import render_docx
from workflow.schema import load_template, sample_terms, validate_terms

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"

LIBREOFFICE_COMPARE = r'''
import json, subprocess, sys, time, uuid
import uno
from com.sun.star.beans import PropertyValue

def prop(name, value):
    p = PropertyValue(); p.Name = name; p.Value = value; return p

jobs, profile, runs = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pipe = f"bench-{uuid.uuid4().hex}"
office = subprocess.Popen(["soffice", "--headless", "--invisible", "--nologo", "--norestore",
                           "--nodefault", f"-env:UserInstallation={profile}",
                           f"--accept=pipe,name={pipe};urp;StarOffice.ComponentContext"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
local = uno.getComponentContext()
resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver",
                                                          local)
for _ in range(600):
    try:
        context = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
        break
    except Exception:
        time.sleep(0.1)
desktop = context.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", context)
dispatcher = context.ServiceManager.createInstanceWithContext("com.sun.star.frame.DispatchHelper",
                                                              context)
times = {}
for name, old, new, out in jobs:
    times[name] = []
    for _ in range(runs):
        started = time.perf_counter()
        document = desktop.loadComponentFromURL(uno.systemPathToFileUrl(new), "_blank", 0,
                                                (prop("Hidden", True),))
        frame = document.getCurrentController().getFrame()
        dispatcher.executeDispatch(frame, ".uno:CompareDocuments", "", 0,
                                   (prop("URL", uno.systemPathToFileUrl(old)),
                                    prop("NoAcceptDialog", True)))
        document.storeToURL(uno.systemPathToFileUrl(out), (prop("FilterName", "MS Word 2007 XML"),))
        document.close(True)
        times[name].append(time.perf_counter() - started)
try:
    desktop.terminate()
except Exception:
    pass
office.wait(timeout=30)
print(json.dumps(times))
'''

PYTHON_REDLINES = r'''
import json, sys, time
from pathlib import Path
from python_redlines import DocxodusEngine
jobs, runs = json.loads(sys.argv[1]), int(sys.argv[2])
engine = DocxodusEngine()
times = {}
for name, old, new, out in jobs:
    times[name] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = engine.run_redline("Counterpart", Path(old).read_bytes(), Path(new).read_bytes())
        times[name].append(time.perf_counter() - started)
    Path(out).write_bytes(result[0])
print(json.dumps(times))
'''


def with_header(template: bytes, text: str) -> bytes:
    """A copy of the template whose pages after the first carry a header of ``text``."""
    document = docx.Document(io.BytesIO(template))
    document.sections[0].header.paragraphs[0].text = text
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def scenarios(spec) -> list[tuple[str, bytes, bytes, dict[str, tuple[str, str]]]]:
    """(name, earlier .docx, later .docx, {part: (deleted words, inserted words)})."""
    base = sample_terms(spec)
    template = spec.docx_path.read_bytes()
    headed = with_header(template, "Confidential: {{ company_short_name }}")

    def render(terms, source=template) -> bytes:
        return render_docx(spec, validate_terms(spec, terms), template=source)

    return [
        ("hourly rate", render(base), render(dict(base, hourly_rate="600")),
         {"word/document.xml": ("$500", "$600")}),
        ("one more date", render(base),
         render(dict(base, cancelled_option_grant_dates=[
             *base["cancelled_option_grant_dates"], "2006-07-01"])),
         {"word/document.xml": (" and", ", and July 1, 2006")}),
        ("sentence dropped", render(base),
         render(dict(base, repurchase_unvested_restricted=False)),
         {"word/document.xml": (
             " The Company intends to exercise its repurchase option under the August 4, 2003 "
             "Restricted Stock Agreement to acquire the unvested shares under the terms "
             "described in the Restricted Stock Agreement.", "")}),
        ("header term", render(base, headed),
         render(dict(base, company_short_name="Turbine Co"), headed),
         {"word/document.xml": ("Capstone", "Turbine Co"),
          "word/header1.xml": ("Capstone", "Turbine Co")}),
    ]


def marked(redline: bytes) -> dict[str, tuple[str, str]]:
    """The deleted and inserted text of each story part of a tracked-changes .docx."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(redline)) as archive:
        for name in archive.namelist():
            if not re.fullmatch(r"word/(document|header\d*|footer\d*)\.xml", name):
                continue
            root = etree.fromstring(archive.read(name))
            deleted = "".join(t.text or "" for d in root.iter(W + "del")
                              for t in d.iter(W + "delText"))
            inserted = "".join(t.text or "" for i in root.iter(W + "ins")
                               for t in i.iter(W + "t"))
            if deleted or inserted:
                out[name] = (deleted, inserted)
    return out


def describe(found: dict[str, tuple[str, str]], expected: dict[str, tuple[str, str]]) -> str:
    if found == expected:
        return "exact"
    parts = []
    for name in sorted(set(found) | set(expected)):
        got = found.get(name, ("", ""))
        short = name.removeprefix("word/").removesuffix(".xml")
        if got != expected.get(name, ("", "")):
            parts.append(f"{short}: -{got[0][:40]!r} +{got[1][:40]!r}")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python-redlines-python", default=None,
                        help="a Python that has python-redlines[docxodus] installed")
    args = parser.parse_args()
    spec = load_template("separation_letter")
    cases = scenarios(spec)
    rows = [("engine", "change", "median s", "x word diff", "marks")]
    with tempfile.TemporaryDirectory(prefix="bench-redline-") as tmp:
        work = Path(tmp)
        jobs = []
        for index, (name, old, new, _expected) in enumerate(cases):
            (work / f"old{index}.docx").write_bytes(old)
            (work / f"new{index}.docx").write_bytes(new)
            jobs.append((name, str(work / f"old{index}.docx"), str(work / f"new{index}.docx")))
        baseline: dict[str, float] = {}
        date = dt.datetime(2025, 1, 31, tzinfo=dt.UTC)
        for name, old, new, expected in cases:
            times, result = [], b""
            for _ in range(args.runs):
                started = time.perf_counter()
                result = redline_docx(old, new, date=date).docx
                times.append(time.perf_counter() - started)
            baseline[name] = statistics.median(times)
            rows.append(("word diff", name, f"{baseline[name]:.3f}", "1.0",
                         describe(marked(result), expected)))
        engines = [("LibreOffice compare", ["/usr/bin/python3", "-I", "-c", LIBREOFFICE_COMPARE],
                    lambda js: [json.dumps(js), (work / "profile").as_uri(), str(args.runs)])]
        if args.python_redlines_python:
            engines.append(("python-redlines", [args.python_redlines_python, "-c",
                                                PYTHON_REDLINES],
                            lambda js: [json.dumps(js), str(args.runs)]))
        for engine, command, arguments in engines:
            outputs = [[*job, str(work / f"{engine[:3]}{i}.docx")] for i, job in enumerate(jobs)]
            done = subprocess.run([*command, *arguments(outputs)], capture_output=True, text=True,
                                  timeout=900, check=False)
            if done.returncode != 0:
                rows.append((engine, "-", "-", "-", f"failed: {done.stderr.strip()[-200:]}"))
                continue
            times = json.loads(done.stdout.strip().splitlines()[-1])
            for (name, _old, _new, expected), output in zip(cases, outputs, strict=True):
                median = statistics.median(times[name])
                rows.append((engine, name, f"{median:.3f}", f"{median / baseline[name]:.0f}",
                             describe(marked(Path(output[3]).read_bytes()), expected)))
        if not args.python_redlines_python:
            rows.append(("python-redlines", "-", "-", "-",
                         "not run: give --python-redlines-python"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
              + "  " + row[4])
    return 0


if __name__ == "__main__":
    sys.exit(main())
