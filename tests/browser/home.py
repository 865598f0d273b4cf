"""Clicks through roxpi's home page in headless Chromium (Debian's, driven
by Playwright with executable_path; Playwright's own browser download is
not reachable here). Called by tests/browser.rs:

    home.py BASE_URL SCREENSHOT_PATH

Prints one JSON object: what the page showed and what the clicks did.
"""

import json
import sys

from playwright.sync_api import sync_playwright

base, screenshot = sys.argv[1], sys.argv[2]
out = {}
with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append([r.method, r.url]))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    out["title"] = page.title()
    out["h2"] = page.locator("h2").all_inner_texts()
    out["rows"] = page.locator("tr").count()
    out["text"] = page.inner_text("body")
    out["html"] = page.content()

    page.fill("#project", "Demo")
    page.click("#one")
    page.wait_for_function(
        "document.getElementById('status').textContent.length > 0", timeout=10000
    )
    out["status_one"] = page.inner_text("#status")

    page.click("#list")
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('cache/list')",
        timeout=10000,
    )
    out["status_list"] = page.inner_text("#status")
    out["requests"] = requests
    out["errors"] = errors
    page.screenshot(path=screenshot, full_page=True)
    browser.close()
print(json.dumps(out))
