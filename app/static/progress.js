// Follow a sync on /updateManifest: poll the task status API every second and show it.
"use strict";

(() => {
  const root = document.getElementById("sync");
  if (!root) return;
  const part = (name) => document.getElementById(`sync-${name}`);
  const [stateText, bar, detail, problem, outcome] =
    ["state", "bar", "detail", "problem", "outcome"].map(part);
  const urlFor = (kind, id) => root.dataset[kind].replace("__id__", encodeURIComponent(id));
  const POLL_MS = 1000;
  const MAX_FAILURES = 5;
  const STATES = {
    PENDING: "Queued: waiting for a worker to pick the sync up…",
    STARTED: "Started…",
    PROGRESS: "Working…",
    RETRY: "Hit a temporary problem: the sync will be tried again.",
    SUCCESS: "Finished.",
    FAILURE: "The sync task failed.",
    LOST: "Lost: the worker running the sync stopped before it finished.",
  };
  // States after which nothing changes: stop polling.
  const FINAL = new Set(["SUCCESS", "FAILURE", "LOST"]);
  const PHASES = {
    checking: "Checking Bungie for a new release",
    downloading: "Downloading",
    ingesting: "Ingesting",
    committing: "Committing the new release",
  };
  let taskId = root.dataset.taskId;
  let failures = 0;
  let joinedNote = null;

  const number = (n) => Number(n).toLocaleString("en");
  const megabytes = (n) => (n / 1048576).toFixed(1);
  const shortTable = (t) => t.replace(/^Destiny(.+)Definition$/, "$1");
  const ofTotal = (done, total, fmt) => (total ? `${fmt(done)}/${fmt(total)}` : fmt(done));
  const clause = (message) => String(message).replace(/\.+$/, "");

  function el(tag, text, attrs = {}) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  function say(className, ...pieces) {
    const p = el("p", null, { class: `notice ${className}` });
    p.append(...pieces);
    outcome.append(p);
  }

  function showProgress(p) {
    if (!p) return;
    const parts = [PHASES[p.phase] || p.phase];
    if (p.table) parts.push(p.language ? `${shortTable(p.table)} (${p.language})` : p.table);
    if (p.tables_total) parts.push(`${p.tables_done}/${p.tables_total} tables`);
    if (p.entries_done) parts.push(`${ofTotal(p.entries_done, p.entries_total, number)} entries`);
    if (p.bytes_done) parts.push(`${ofTotal(p.bytes_done, p.bytes_total, megabytes)} MB`);
    detail.textContent = parts.join(" · ");
    const within = p.bytes_total ? p.bytes_done / p.bytes_total
      : p.entries_total ? p.entries_done / p.entries_total : 0;
    if (p.phase === "committing") bar.value = 1;
    else if (p.tables_total) bar.value = Math.min(1, (p.tables_done + within) / p.tables_total);
  }

  function diffTable(diffs) {
    const table = el("table", null, { class: "data diff" });
    const head = table.createTHead().insertRow();
    for (const name of ["Table", "Added", "Changed", "Removed", "Entries"]) {
      head.append(el("th", name, name === "Table" ? {} : { class: "num" }));
    }
    const body = table.createTBody();
    for (const d of diffs) {
      body.insertRow().append(
        el("td", shortTable(d.table), { title: d.table }),
        el("td", `+${number(d.added)}`, { class: "num added" }),
        el("td", `~${number(d.changed)}`, { class: "num changed" }),
        el("td", `−${number(d.removed)}`, { class: "num removed" }),
        el("td", number(d.total), { class: "num" }),
      );
    }
    return table;
  }

  function names(diffs, kind, label) {
    const list = el("ul", null, { class: "names" });
    for (const d of diffs.filter((d) => d.table === root.dataset.itemTable)) {
      for (const [hash, name] of d[`${kind}_names`]) {
        const li = el("li");
        li.append(el("a", name || `#${hash}`, { href: urlFor("itemUrl", hash) }));
        list.append(li);
      }
    }
    if (list.childElementCount) outcome.append(el("h3", label, { class: "names-title" }), list);
  }

  // Show how the sync ended; return true when it joined another run that should be followed.
  function showResult(r) {
    outcome.replaceChildren();
    outcome.hidden = false;
    if (joinedNote) say("info", joinedNote);
    const release = () => el("a", r.version, { href: urlFor("releaseUrl", r.release_id) });
    if (r.outcome === "busy") {
      if (!r.running_id || r.running_id === taskId) {
        say("info", "This request joined the running sync, which has ended: see the dashboard.");
        return false;
      }
      joinedNote = `This request joined the running sync ${r.running_id}.`;
      say("info", joinedNote);
      taskId = r.running_id;
      part("task").textContent = taskId;
      history.replaceState(null, "", urlFor("pageUrl", taskId));
      return true;
    }
    bar.value = 1;
    root.dataset.outcome = r.outcome;
    if (r.outcome === "unchanged") {
      say("ok", "Already up to date: version ", release(), ` (release ${r.release_id}).`);
    } else if (r.outcome === "updated") {
      const from = r.previous_version ? ` from ${r.previous_version}` : " (first release)";
      const verb = r.rollback ? "Rolled back to version " : "Updated to version ";
      say("ok", verb, release(), `${from}.`);
      if (r.rollback) say("info", "Bungie serves an earlier release again: the kept copy is live.");
      if (r.diffs && r.diffs.length) {
        outcome.append(diffTable(r.diffs));
        names(r.diffs, "added", "New items");
        names(r.diffs, "changed", "Changed items");
      }
    } else if (r.outcome === "unavailable") {
      const retry = r.retry_after ? ` Bungie asks to retry in ${Math.ceil(r.retry_after)} s.` : "";
      const why = `Bungie is unavailable (${r.error}): ${clause(r.message)}.`;
      say("warning", `${why}${retry} Nothing changed.`);
    } else {
      const why = `The sync failed (${r.error}): ${clause(r.message)}.`;
      say("error", `${why} The live release did not change.`);
    }
    return false;
  }

  function warn(message) {
    problem.textContent = message;
    stateText.textContent = "Cannot read the sync's status right now.";
    problem.hidden = false;
  }

  function retry(message) {
    failures += 1;
    if (failures > MAX_FAILURES) {
      root.dataset.state = "UNREACHABLE";
      warn(`${message} Gave up after ${MAX_FAILURES} tries: reload the page to try again.`);
      return;
    }
    warn(`${message} Trying again (${failures}/${MAX_FAILURES})…`);
    setTimeout(poll, POLL_MS * failures);
  }

  function show(status) {
    root.dataset.state = status.state;
    stateText.textContent = STATES[status.state] || status.state;
    if (status.state === "RETRY" && status.error) stateText.textContent += ` (${status.error})`;
    if (!FINAL.has(status.state)) {
      showProgress(status.progress);
      setTimeout(poll, POLL_MS);
      return;
    }
    detail.textContent = "";
    if (status.state === "LOST") {
      outcome.replaceChildren();
      outcome.hidden = false;
      say("warning", status.error || STATES.LOST);
    } else if (status.state === "FAILURE") {
      outcome.replaceChildren();
      outcome.hidden = false;
      const why = clause(status.error || "No reason was given");
      say("error", `${why}. The live release did not change.`);
    } else if (status.result && showResult(status.result)) {
      root.dataset.state = "JOINED";
      stateText.textContent = "Following the running sync…";
      setTimeout(poll, POLL_MS);
    }
  }

  async function poll() {
    let response;
    let body = null;
    try {
      response = await fetch(urlFor("statusUrl", taskId), {
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      body = await response.json().catch(() => null);
    } catch {
      retry("Cannot reach the server.");
      return;
    }
    if (!response.ok || !body) {
      const why = clause((body && body.message) || `HTTP ${response.status}`);
      if (response.status === 404) {
        root.dataset.state = "UNKNOWN";
        warn(`The server does not know this sync: ${why}.`);
      } else {
        retry(`The status service answered an error: ${why}.`);
      }
      return;
    }
    failures = 0;
    problem.hidden = true;
    show(body);
  }

  stateText.hidden = false;
  bar.hidden = false;
  poll();
})();
