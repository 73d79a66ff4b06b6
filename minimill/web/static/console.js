// minimill console: the key in session storage, sent with every request the console makes (htmx page loads
// and the API calls below); the playground's streamed call; cache and batch buttons; charts from JSON data.
// User text only ever reaches the page through textContent, never as HTML.
(() => {
  "use strict";
  const KEY = "minimill.key";
  const key = () => sessionStorage.getItem(KEY);
  const auth = () => (key() ? { Authorization: `Bearer ${key()}` } : {});
  const $ = (selector, root = document) => root.querySelector(selector);
  // Dollars as the server's pages write them (views.usd): under a dollar, six significant digits, no exponent,
  // no trailing zeros; from a dollar, four decimals with thousands separated; the sign before the dollar.
  function usd(value) {
    const amount = Math.abs(Number(value));
    const digits = amount >= 1 ? amount.toLocaleString("en-US", { minimumFractionDigits: 4, maximumFractionDigits: 4 })
      : Number(amount.toPrecision(6)).toFixed(12).replace(/\.?0+$/, "");
    return `${value < 0 ? "-" : ""}$${digits}`;
  }

  function reload() {
    htmx.ajax("GET", location.pathname + location.search, { target: "body", swap: "innerHTML" });
  }

  async function api(method, path, body) {
    const headers = { ...auth(), ...(body === undefined ? {} : { "Content-Type": "application/json" }) };
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || `${response.status} ${response.statusText}`);
    return data;
  }

  function showError(id, error) {
    const box = document.getElementById(id);
    if (!box) return;
    box.textContent = error ? String(error.message || error) : "";
    box.hidden = !error;
  }

  // What an answer that is not a page says went wrong: the API's error message, or the status.
  function messageOf(xhr) {
    let data = {};
    try { data = JSON.parse(xhr.responseText); } catch { /* not JSON: the status says it */ }
    return (data && data.error && data.error.message) || `${xhr.status} ${xhr.statusText}`.trim();
  }

  // ---- login -------------------------------------------------------------------------------------------
  function onLoginPage() {
    const login = $("#login");
    if (!login) return;
    if (login.dataset.authError) sessionStorage.removeItem(KEY);
    else if (key()) reload(); // a kept key: ask for the page again, with it
  }

  // ---- playground --------------------------------------------------------------------------------------
  function playgroundBody(form) {
    const value = (name) => form.elements[name].value.trim();
    const messages = [];
    if (value("system")) messages.push({ role: "system", content: form.elements.system.value });
    messages.push({ role: "user", content: form.elements.user.value });
    const body = { model: value("model"), messages, max_tokens: Number(value("max_tokens") || 64),
                   temperature: Number(value("temperature") || 0), top_p: Number(value("top_p") || 1) };
    if (value("seed")) body.seed = Number(value("seed"));
    if (value("tools")) body.tools = JSON.parse(value("tools"));
    if (value("tool_choice")) body.tool_choice = value("tool_choice");
    if (value("cache_id")) body.cache_id = value("cache_id");
    if (value("session_id")) body.session_id = value("session_id");
    return body;
  }

  // A JSON value as a Python literal: True/False/None for JSON's words (never inside strings, which keep
  // JSON's quoting: Python reads its escapes the same), nested lines indented from `indent`.
  function python(value, indent = "") {
    if (value === null || value === undefined) return "None";
    if (typeof value === "boolean") return value ? "True" : "False";
    if (typeof value !== "object") return JSON.stringify(value);
    const inner = `${indent}    `;
    const items = Array.isArray(value) ? value.map((v) => python(v, inner))
      : Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${python(v, inner)}`);
    const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    return items.length ? `${open}\n${items.map((item) => inner + item).join(",\n")},\n${indent}${close}` : open + close;
  }

  function showCode(form) {
    let body;
    try { body = playgroundBody(form); } catch (error) { showError("pg-error", `Tools: ${error.message}`); return; }
    const url = `${location.origin}/v1`;
    const json = JSON.stringify(body, null, 2);
    $("#pg-code-curl").textContent = `curl ${url}/chat/completions \\\n  -H 'Content-Type: application/json' \\\n` +
      `  -H "Authorization: Bearer $MINIMILL_API_KEY" \\\n  -d '${json.replaceAll("'", "'\\''")}'`;
    const { model, messages, cache_id, session_id, ...rest } = body;
    const extra = {};
    if (cache_id) extra.cache_id = cache_id;
    if (session_id) extra.session_id = session_id;
    let args = `    model=${JSON.stringify(model)},\n    messages=${python(messages, "    ")},\n`;
    for (const [name, v] of Object.entries(rest)) args += `    ${name}=${python(v, "    ")},\n`;
    if (Object.keys(extra).length) args += `    extra_body=${python(extra, "    ")},\n`;
    $("#pg-code-python").textContent = `import os\nfrom openai import OpenAI\n\n` +
      `client = OpenAI(base_url=${JSON.stringify(url)}, api_key=os.environ.get("MINIMILL_API_KEY", "none"))\n` +
      `answer = client.chat.completions.create(\n${args})\nprint(answer.choices[0].message.content)\nprint(answer.usage)\n`;
  }

  function showUsage(usage, model, ttft) {
    const cost = usage.cost || {};
    $("#pg-usage-model").textContent = model || "";
    $("#pg-usage-prompt").textContent = usage.prompt_tokens;
    $("#pg-usage-cached").textContent = (usage.prompt_tokens_details || {}).cached_tokens ?? 0;
    $("#pg-usage-completion").textContent = usage.completion_tokens;
    $("#pg-usage-cost").textContent = cost.total === undefined ? "—" :
      `${usd(cost.total)} (input ${usd(cost.input)}, cached input ${usd(cost.cached_input)}, output ${usd(cost.output)})`;
    $("#pg-usage-ttft").textContent = ttft === null ? "—" : `${ttft.toFixed(0)} ms`;
    $("#pg-usage").hidden = false;
  }

  function showAttempts(router) {
    const table = $("#pg-attempts");
    const rows = table.tBodies[0];
    rows.replaceChildren();
    for (const attempt of router.attempts || []) {
      const tr = rows.insertRow();
      const passed = attempt.passed === null ? "not checked" : attempt.passed ? "yes" : "no";
      for (const text of [attempt.model, passed, attempt.reason, usd(attempt.cost)]) {
        tr.insertCell().textContent = text;
      }
    }
    table.hidden = false;
  }

  async function runPlayground(form) {
    const answer = $("#pg-answer");
    const calls = {};
    answer.textContent = "";
    showError("pg-error", null);
    for (const id of ["#pg-usage", "#pg-attempts", "#pg-tool-calls"]) $(id).hidden = true;
    let body;
    try { body = playgroundBody(form); } catch (error) { showError("pg-error", `Tools: ${error.message}`); return; }
    const button = $("#pg-send");
    button.disabled = true;
    const started = performance.now();
    let ttft = null;
    let model = null;
    let usage = null;
    let routed = false;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: { ...auth(), "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error((data.error && data.error.message) || `${response.status} ${response.statusText}`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      const handle = (data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        model = chunk.model || model;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (delta.content) {
            if (ttft === null) ttft = performance.now() - started;
            answer.textContent += delta.content;
          }
          for (const call of delta.tool_calls || []) {
            const known = calls[call.index] || (calls[call.index] = { name: "", arguments: "" });
            if (call.function && call.function.name) known.name = call.function.name;
            if (call.function && call.function.arguments) known.arguments += call.function.arguments;
          }
        }
        if (Object.keys(calls).length) {
          $("#pg-tool-calls-text").textContent = Object.values(calls).map((c) => `${c.name}(${c.arguments})`).join("\n");
          $("#pg-tool-calls").hidden = false;
        }
        if (chunk.usage) { usage = chunk.usage; showUsage(usage, model, ttft); }
        if (chunk.router) { routed = true; showAttempts(chunk.router); }
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) if (line.startsWith("data: ")) handle(line.slice(6));
        }
      }
      // `auto` with one model on its route streams that model's answer as it comes, with no router block:
      // its one attempt is still shown, as one that nothing checked.
      if (body.model === "auto" && !routed && usage) {
        showAttempts({ attempts: [{ model, passed: null, cost: (usage.cost || {}).total,
                                    reason: "the only model of this task's route: streamed as it came" }] });
      }
      form.dataset.done = "yes";
    } catch (error) {
      showError("pg-error", error);
    } finally {
      button.disabled = false;
    }
  }

  // ---- downloads (a plain link would not carry the key) ------------------------------------------------
  async function download(link) {
    const response = await fetch(link.getAttribute("href"), { headers: auth() });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = link.getAttribute("download") || "download";
    document.body.appendChild(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- events (delegated, so they survive htmx swapping the body) --------------------------------------
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    const action = form.id || form.dataset.action;
    const handlers = {
      "login-form": () => { sessionStorage.setItem(KEY, form.elements.key.value.trim()); reload(); },
      "playground": () => runPlayground(form),
      "cache-create": async () => {
        await api("POST", "/v1/caches", { model: form.elements.model.value, prompt: form.elements.prompt.value,
                                          ttl_seconds: Number(form.elements.ttl_seconds.value) });
        reload();
      },
      "extend-cache": async () => {
        await api("PATCH", `/v1/caches/${encodeURIComponent(form.dataset.id)}`,
                  { ttl_seconds: Number(form.elements.ttl_seconds.value) });
        reload();
      },
    };
    if (!(action in handlers)) return;
    event.preventDefault();
    try { await handlers[action](); } catch (error) { showError("page-error", error); }
  });

  document.addEventListener("click", async (event) => {
    const target = event.target.closest("button, a");
    if (!target) return;
    try {
      if (target.id === "logout") { sessionStorage.removeItem(KEY); reload(); }
      else if (target.id === "pg-show-code") {
        const code = $("#pg-code");
        code.hidden = !code.hidden;
        target.setAttribute("aria-expanded", String(!code.hidden));
        if (!code.hidden) showCode(target.form);
      } else if (target.dataset.action === "delete-cache") {
        await api("DELETE", `/v1/caches/${encodeURIComponent(target.dataset.id)}`);
        reload();
      } else if (target.dataset.action === "cancel-batch") {
        await api("POST", `/v1/batches/${encodeURIComponent(target.dataset.id)}/cancel`);
        reload();
      } else if (target.hasAttribute("data-download") && key()) {
        event.preventDefault();
        await download(target);
      }
    } catch (error) {
      showError("page-error", error); // every page has one (htmx swaps the body's content, not its attributes)
    }
  });

  document.addEventListener("change", (event) => {
    if (event.target.id === "pg-model") {
      $("#pg-model-reason").textContent = event.target.selectedOptions[0].dataset.reason || "";
    }
  });

  document.addEventListener("htmx:configRequest", (event) => {
    if (key()) event.detail.headers.Authorization = `Bearer ${key()}`;
  });

  // Only our HTML pages are swapped in: an API error (JSON, which may quote the URL) is shown as text; a
  // fragment whose key was refused gives way to the whole login page.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const { xhr, target } = event.detail;
    if (xhr.status === 401 && target === document.body) {
      sessionStorage.removeItem(KEY); // a refused key is forgotten before its error shows, not after the swap settles
    } else if (xhr.status === 401) {
      event.detail.shouldSwap = false;
      reload();
    } else if (!(xhr.getResponseHeader("Content-Type") || "").startsWith("text/html")) {
      event.detail.shouldSwap = false;
      showError("page-error", messageOf(xhr));
    }
  });
  document.addEventListener("htmx:sendError", () => showError("page-error", "The server could not be reached."));

  // Back and forward fetch the page again (nothing is kept in history): with the key, like any page load.
  document.addEventListener("htmx:historyCacheMiss", (event) => {
    if (key()) event.detail.xhr.setRequestHeader("Authorization", `Bearer ${key()}`);
  });
  document.addEventListener("htmx:historyCacheMissLoadError", reload); // refused: the login page, swapped in

  // ---- charts ------------------------------------------------------------------------------------------
  const charts = [];
  function chart(id, config) {
    const canvas = document.getElementById(id);
    if (canvas && window.Chart) charts.push(new Chart(canvas, { ...config, options: { maintainAspectRatio: false, animation: false, ...config.options } }));
  }
  const data = (id) => { const node = document.getElementById(id); return node ? JSON.parse(node.textContent) : null; };
  const dollars = { ticks: { callback: (v) => usd(v) } };

  function drawCharts() {
    while (charts.length) charts.pop().destroy();
    const usage = data("usage-data");
    if (usage) {
      chart("chart-per-day", { type: "bar", data: { labels: usage.days, datasets: usage.by_model },
                               options: { scales: { x: { stacked: true }, y: { stacked: true, ...dollars } } } });
      chart("chart-savings", { type: "bar", data: { labels: usage.days, datasets: [
        { label: "actual", data: usage.actual }, { label: "without reuse", data: usage.without }] },
        options: { scales: { y: dollars } } });
      chart("chart-per-model", { type: "bar", data: { labels: Object.keys(usage.models),
        datasets: [{ label: "cost", data: Object.values(usage.models) }] }, options: { indexAxis: "y", scales: { x: dollars } } });
    }
    const points = data("scoreboard-data");
    if (points) {
      chart("chart-scoreboard", { type: "scatter", data: { datasets: points.map((p) => ({
        label: p.default ? `${p.label} (default)` : p.label, data: [{ x: p.x, y: p.y }], pointRadius: p.default ? 9 : 6 })) },
        options: { scales: { x: { title: { display: true, text: "$ per 1,000 items" }, ...dollars },
                             y: { title: { display: true, text: "mean quality" }, min: 0, max: 1 } } } });
    }
  }

  function ready() {
    htmx.config.historyCacheSize = 0; // pages hold a tenant's data: never kept in local storage
    // Every answer is swapped in like a page (the login page is a 401, a bad filter a 400 page, the ledger
    // being down a 503 page): `htmx:beforeSwap` above keeps out whatever is not one of our pages.
    htmx.config.responseHandling = [{ code: "204", swap: false }, { code: "...", swap: true }];
    onLoginPage();
    drawCharts();
  }
  document.addEventListener("htmx:afterSettle", () => { onLoginPage(); drawCharts(); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
