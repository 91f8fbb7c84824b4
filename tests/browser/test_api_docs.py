"""The API documentation page runs in a real browser under the site's own
Content-Security-Policy (issue 12, Deliver 9): before, /api/docs loaded Swagger UI from a CDN
and an inline script, both blocked by ``script-src 'self'``, so it showed a blank page."""

from __future__ import annotations

from typing import Any


def test_api_docs_render_with_local_assets_and_no_csp_violation(server: str, browser: Any) -> None:
    page = browser.new_page()
    violations: list[str] = []
    outside: list[str] = []
    page.on(
        "console",
        lambda msg: (
            violations.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused to" in msg.text
            else None
        ),
    )
    page.on(
        "request",
        lambda req: outside.append(req.url) if not req.url.startswith(server) else None,
    )
    response = page.goto(server + "/api/docs")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in (response.headers.get("content-security-policy") or "")
    # Swagger UI has read /openapi.json and listed the API's operations
    page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/v1/studies/{study}/subjects" in p for p in paths)
    assert not violations, violations
    assert not outside, outside
