"""Reading a report page and what its script wrote."""

import json
import re
from html import unescape


def page_data(html: str) -> dict:
    """The JSON the page's script draws from."""
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html,
                      re.S)
    assert found, "the page embeds no report data"
    return json.loads(found.group(1))


def read_results(dom: str) -> dict:
    """What the page's test hook wrote into #test-results (a DOM dump)."""
    found = re.search(r'<pre id="test-results"[^>]*>(.*?)</pre>', dom, re.S)
    assert found and found.group(1).strip(), "the page's script wrote no test results"
    return json.loads(unescape(found.group(1)))
