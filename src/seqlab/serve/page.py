"""The page at `/`: pick a served model, type text, see its answer.

Language models stream their tokens as they are drawn (server-sent events read with fetch),
chat models keep a conversation (each reply streamed, "Reset" forgets it), classifiers show every label's probability as a bar, seq2seq models their output line and the
attention of greedy decoding as a heat-map (a row per output token, a column per source token),
taggers their output line.
One self-contained HTML file: no script or style is fetched from elsewhere.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>seqlab serve</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  textarea { width: 100%; min-height: 5rem; font: inherit; }
  pre { white-space: pre-wrap; background: #f4f4f4; padding: .75rem; min-height: 2rem; }
  .bar { background: #4a7ebb; height: 1rem; }
  .row { display: grid; grid-template-columns: 8rem 1fr 4rem; gap: .5rem; align-items: center; }
  .error { color: #b00020; }
  label { display: block; margin: .75rem 0 .25rem; }
  table.heat td { width: 1.6rem; height: 1.2rem; padding: 0; }
  table.heat th { font-weight: normal; font-size: .8rem; padding: 0 .25rem; }
  table.heat thead th { writing-mode: vertical-rl; }
  table.heat caption { caption-side: bottom; text-align: left; white-space: nowrap; }
  #conversation p { margin: .25rem 0; white-space: pre-wrap; }
  #conversation .role { font-weight: bold; }
</style>
</head>
<body>
<h1>seqlab serve</h1>
<label for="model">Model</label>
<select id="model"></select> <span id="kind"></span>
<label for="text">Input (one per line for predictions)</label>
<textarea id="text">The </textarea>
<div id="conversation"></div>
<div id="generate-options">
  <label for="max-new-tokens">New tokens</label>
  <input id="max-new-tokens" type="number" value="64" min="0">
</div>
<p><button id="run">Run</button> <button id="reset">Reset</button></p>
<pre id="output" aria-live="polite"></pre>
<div id="probabilities"></div>
<div id="attention"></div>
<script>
const models = {};
let conversation = [];  // a chat model's messages so far
const $ = (id) => document.getElementById(id);

function showError(message) {
  $("output").innerHTML = "";
  const span = document.createElement("span");
  span.className = "error";
  span.textContent = message;
  $("output").appendChild(span);
}

async function loadModels() {
  const reply = await fetch("/v1/models");
  const body = await reply.json();
  for (const model of body.models) {
    models[model.name] = model;
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name} (${model.kind})`;
    $("model").appendChild(option);
  }
  chooseModel();
}

function chooseModel() {
  const model = models[$("model").value];
  if (!model) return;
  $("kind").textContent = `${model.task}, ${model.source}${model.quantized ? ", int8" : ""}`;
  const samples = model.kind === "generate" || model.kind === "chat";
  $("generate-options").style.display = samples ? "" : "none";
  $("reset").style.display = model.kind === "chat" ? "" : "none";
  $("run").textContent = model.kind === "chat" ? "Send" : "Run";
  resetConversation();
}

function resetConversation() {
  conversation = [];
  $("conversation").innerHTML = "";
}

function showTurn(role, content) {
  const turn = document.createElement("p");
  turn.innerHTML = `<span class="role"></span> <span></span>`;
  turn.children[0].textContent = `${role}:`;
  turn.children[1].textContent = content;
  $("conversation").appendChild(turn);
}

async function readEvents(reply, onToken, onDone) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    const events = buffer.split("\\n\\n");
    buffer = events.pop();
    for (const event of events) {
      const data = JSON.parse(event.replace(/^data: /, ""));
      if (data.token !== undefined) onToken(data.token);
      if (data.error) showError(data.error.message);
      if (data.done) { onDone(data); $("output").dataset.done = "true"; }
    }
  }
}

async function generate(model) {
  const reply = await fetch("/v1/generate", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: model.name, prompt: $("text").value, stream: true,
                          max_new_tokens: Number($("max-new-tokens").value)}),
  });
  if (!reply.ok) { showError((await reply.json()).error.message); return; }
  $("output").textContent = $("text").value;
  await readEvents(reply, (token) => { $("output").textContent += token; }, () => {});
}

async function chat(model) {
  const text = $("text").value.trim();
  if (!text) return;
  const messages = conversation.concat([{role: "user", content: text}]);
  const reply = await fetch("/v1/chat", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: model.name, messages: messages, stream: true,
                          max_new_tokens: Number($("max-new-tokens").value)}),
  });
  if (!reply.ok) { showError((await reply.json()).error.message); return; }
  showTurn("user", text);
  $("text").value = "";
  await readEvents(reply, (token) => { $("output").textContent += token; }, (data) => {
    conversation = messages.concat([data.message]);
    showTurn("assistant", data.message.content);
  });
}

async function predict(model) {
  const inputs = $("text").value.split("\\n").filter((line) => line.trim());
  const reply = await fetch("/v1/predict", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: model.name, inputs: inputs,
                          probabilities: model.kind === "classify",
                          attention: model.kind === "translate"}),
  });
  const body = await reply.json();
  if (!reply.ok) { showError(body.error.message); return; }
  $("output").textContent = body.outputs.join("\\n");
  if (body.probabilities) {
    const last = body.probabilities[body.probabilities.length - 1];
    for (const [label, p] of Object.entries(last).sort((a, b) => b[1] - a[1])) {
      const row = document.createElement("div");
      row.className = "row";
      row.innerHTML = `<span></span><div><div class="bar"></div></div><span></span>`;
      row.children[0].textContent = label;
      row.children[1].firstChild.style.width = `${(100 * p).toFixed(1)}%`;
      row.children[2].textContent = p.toFixed(3);
      $("probabilities").appendChild(row);
    }
  }
  if (body.attention) drawAttention(body.attention[body.attention.length - 1]);
  $("output").dataset.done = "true";
}

function drawAttention(map) {
  if (!map) return;
  const table = document.createElement("table");
  table.className = "heat";
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const token of map.source) {
    const cell = document.createElement("th");
    cell.textContent = token;
    head.appendChild(cell);
  }
  const rows = table.createTBody();
  map.weights.forEach((weights, i) => {
    const row = rows.insertRow();
    const name = document.createElement("th");
    name.textContent = map.output[i];
    row.appendChild(name);
    for (const weight of weights) {
      const cell = row.insertCell();
      cell.style.background = `rgba(74, 126, 187, ${weight})`;
      cell.title = weight.toFixed(3);
    }
  });
  const caption = table.createCaption();
  caption.textContent = `${map.note} (rows: output tokens, columns: source)`;
  $("attention").appendChild(table);
}

$("model").addEventListener("change", chooseModel);
$("reset").addEventListener("click", () => { resetConversation(); $("output").textContent = ""; });
$("run").addEventListener("click", async () => {
  const model = models[$("model").value];
  $("output").textContent = "";
  delete $("output").dataset.done;
  $("probabilities").innerHTML = "";
  $("attention").innerHTML = "";
  try {
    if (model.kind === "generate") await generate(model);
    else if (model.kind === "chat") await chat(model);
    else await predict(model);
  } catch (error) {
    showError(String(error));
  }
});
loadModels();
</script>
</body>
</html>
"""
