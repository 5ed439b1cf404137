"""The page at `/` in a real browser: Playwright driving Debian's chromium against a live server.

Types into the page, reads the streamed generation, a two-turn chat, the classifier's answer
with its probability bars and the seq2seq models' attention heat-maps (recurrent and
Transformer), and keeps screenshots (in $SEQLAB_TEST_ARTIFACTS, else the test's tmp dir).
Skipped, with the reason, where Playwright or a chromium binary is missing
(`apt-get install -y chromium`; Playwright's own browser download is not needed).
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from seqlab.serve import ServeSettings, create_app, load_model
from seqlab.train.run import open_run, predict_run

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,  # a browser start: several seconds on a shared CPU
    pytest.mark.skipif(CHROMIUM is None,
                       reason="no chromium binary; install it with apt-get install -y chromium"),
]


@pytest.fixture
def live_server(served_runs):
    import uvicorn

    models = [load_model(f"{name}={served_runs[name]}") for name in ("classify", "gpt", "reverse", "chat",
                                                                        "transformer")]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(models, ServeSettings()), host="127.0.0.1", port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_page_streams_generation_and_shows_probabilities(live_server, served_runs, tmp_path):
    artifacts = Path(os.environ.get("SEQLAB_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    expected_text = predict_run(served_runs["gpt"], ["The "])[0]  # 20 new tokens
    expected_label = predict_run(served_runs["classify"], ["the film was good"])[0]
    _, chat_task, chat_model, device = open_run(served_runs["chat"])
    first = [{"role": "user", "content": "say dog"}]
    first_reply = chat_task.reply(chat_model, first, device)
    second_reply = chat_task.reply(chat_model, first + [
        {"role": "assistant", "content": first_reply}, {"role": "user", "content": "say cat"}],
        device)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(live_server + "/")
        page.wait_for_selector("#model option[value='gpt']", state="attached")

        page.select_option("#model", "gpt")
        page.fill("#text", "The ")
        page.fill("#max-new-tokens", "20")
        page.click("#run")
        page.wait_for_selector("#output[data-done='true']", timeout=30_000)
        assert page.text_content("#output") == expected_text

        page.select_option("#model", "classify")
        assert not page.is_visible("#max-new-tokens")
        page.fill("#text", "the film was good")
        page.click("#run")
        page.wait_for_selector("#output[data-done='true']", timeout=30_000)
        assert page.text_content("#output") == expected_label
        bars = page.query_selector_all("#probabilities .row")
        assert len(bars) == 2
        shown = {row.query_selector("span").text_content() for row in bars}
        assert shown == {"pos", "neg"}
        page.screenshot(path=str(artifacts / "serve-page.png"), full_page=True)

        page.select_option("#model", "reverse")
        page.fill("#text", "a b c d")
        page.click("#run")
        page.wait_for_selector("#output[data-done='true']", timeout=30_000)
        assert page.text_content("#output") == predict_run(served_runs["reverse"], ["a b c d"])[0]
        columns = page.query_selector_all("#attention table.heat thead th")
        assert [c.text_content() for c in columns] == ["", "a", "b", "c", "d"]
        assert page.query_selector_all("#attention table.heat tbody tr")
        page.screenshot(path=str(artifacts / "serve-page-attention.png"), full_page=True)

        page.select_option("#model", "transformer")
        page.fill("#text", "a b c d")
        page.click("#run")
        page.wait_for_selector("#output[data-done='true']", timeout=30_000)
        columns = page.query_selector_all("#attention table.heat thead th")
        assert [c.text_content() for c in columns] == ["", "a", "b", "c", "d"]
        assert "cross-attention" in page.text_content("#attention caption")

        page.select_option("#model", "chat")
        assert page.text_content("#run") == "Send" and page.is_visible("#reset")
        for text, reply in [("say dog", first_reply), ("say cat", second_reply)]:
            page.fill("#text", text)
            page.click("#run")
            page.wait_for_selector("#output[data-done='true']", timeout=30_000)
            assert page.text_content("#output") == reply
        turns = [t.text_content() for t in page.query_selector_all("#conversation p")]
        assert turns == ["user: say dog", f"assistant: {first_reply}", "user: say cat",
                         f"assistant: {second_reply}"]
        page.screenshot(path=str(artifacts / "serve-page-chat.png"), full_page=True)
        page.click("#reset")
        assert page.query_selector_all("#conversation p") == []
        browser.close()
    assert (artifacts / "serve-page.png").stat().st_size > 1000
