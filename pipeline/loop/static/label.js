// The labelling page: buttons and keys; every request carries the session's token.
"use strict";
const token = document.querySelector('meta[name="label-token"]').content;
let state = null;

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: {"X-Label-Token": token, "Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin"});
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status}`);
  return response.json();
}

function current() {
  return state ? state.batch.find(item => item.label === null) : undefined;
}

function render() {
  const list = document.getElementById("batch");
  list.replaceChildren();
  const next = current();
  for (const item of state.batch) {
    const li = document.createElement("li");
    li.dataset.id = item.id;
    if (item.label !== null) li.classList.add("answered");
    if (next && item.id === next.id) li.classList.add("current");
    const img = document.createElement("img");
    img.src = item.src;
    img.alt = item.name;
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = `${item.name}: predicted ${item.predicted} ${item.probability.toFixed(2)}; ${item.why}` +
      (item.label === null ? "" : ` (${item.label === "skip" ? "skipped" : "labelled " + item.label})`);
    const group = document.createElement("div");
    group.className = "choices";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", `Class of ${item.name}`);
    state.classes.forEach(name => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.setAttribute("aria-pressed", String(item.label === name));
      button.disabled = item.label !== null;
      button.addEventListener("click", () => send("label", item.id, name));
      group.append(button);
    });
    const skip = document.createElement("button");
    skip.type = "button";
    skip.textContent = "skip";
    skip.setAttribute("aria-label", `Skip ${item.name}`);
    skip.disabled = item.label !== null;
    skip.addEventListener("click", () => send("skip", item.id));
    group.append(skip);
    li.append(img, meta, group);
    list.append(li);
  }
  const a = state.accuracy;
  const [low, high] = a.interval;
  let said = `Validation accuracy ${a.accuracy.toFixed(3)} [${low.toFixed(3)}, ${high.toFixed(3)}], ` +
    `${a.change >= 0 ? "+" : ""}${a.change.toFixed(3)} from the run's own ${a.run.toFixed(3)}, with ${state.given} new labels.`;
  if (state.replay && state.replay.expected !== undefined) {
    said += ` The replay expected ${state.replay.expected.toFixed(3)} at this many labels (${state.replay.strategy}).`;
  }
  document.getElementById("accuracy").textContent = said;
  document.getElementById("status").textContent = state.batch.length ?
    `${state.batch.filter(i => i.label === null).length} of ${state.batch.length} photos of this batch left; ` +
    `chosen by ${state.strategy}` + (state.history.length > 1 ?
      `; retrained and chosen in ${state.seconds.toFixed(2)} s.` : ".") :
    "Every photo of the pool has an answer. Press Done.";
}

// Actions run one after another, each deciding its photo when its turn comes: keys pressed
// faster than the server answers still label the photos in order.
let queue = Promise.resolve();

function act(decide) {
  queue = queue.then(async () => {
    const step = decide();
    if (!step) return;
    const [action, id, label] = step;
    state = await call("POST", `/api/${action}`, {id, label});
    render();
  }).catch(error => { document.getElementById("status").textContent = `Not saved: ${error.message}`; });
}

function send(action, id, label) {
  act(() => [action, id, label]);
}

document.addEventListener("keydown", event => {
  if (!state || event.ctrlKey || event.metaKey || event.altKey) return;
  const k = Number(event.key);
  if (event.key === "u") send("undo");
  else if (event.key === "s") act(() => current() && ["skip", current().id]);
  else if (Number.isInteger(k) && k >= 1 && k <= Math.min(9, state.classes.length)) {
    act(() => current() && ["label", current().id, state.classes[k - 1]]);
  }
});

document.getElementById("done").addEventListener("click", async () => {
  await call("POST", "/api/done", {});
  document.getElementById("status").textContent = "Done: the command line says how to train with the new labels.";
  document.getElementById("batch").replaceChildren();
});

call("GET", "/api/state").then(s => { state = s; render(); });
