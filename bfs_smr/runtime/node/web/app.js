// The node's web page: its channels, open, pay, close, and tic-tac-toe, live through the
// node's event stream. Vanilla JS, no build step, no third-party code; it talks only to
// the node that served it, through the /v1 API (docs/web.md).
//
// The API token comes from the URL fragment (#token=...), which browsers never send to a
// server; it is kept in sessionStorage (this tab only), removed from the address bar,
// and sent only in the Authorization header. Every value from the node is put into the
// page as text (textContent), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "bfs-smr.token";
  const HEX_ID = /^[0-9a-f]{64}$/;
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  let token = null;
  let me = null; // this node's id (hex)
  let streamController = null; // aborts the running event stream
  let generation = 0; // bumped whenever the token changes: old loops stop
  const channels = new Map(); // channel id -> {data, el, party, busy, cells}
  const refreshing = new Map(); // channel id -> {again}

  const APP_NAMES = { payments: "Payments", tictactoe: "Tic-tac-toe", counter: "Counter" };

  const byTestId = (name, root = document) => root.querySelector(`[data-testid="${name}"]`);

  // -- errors -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function oneLine(text) {
    const line = String(text).split("\n").find((l) => l.trim() !== "") || String(text);
    return line.trim().slice(0, 500);
  }

  // An amount typed in a form, as a JavaScript number only if it is exactly that number:
  // past 2**53 (wei on an EVM chain) a number drops digits, and the page would pay or
  // deposit an amount other than the one typed. Larger ones: the API or the command line.
  function wholeAmount(text, what) {
    const trimmed = String(text).trim();
    if (!/^[0-9]+$/.test(trimmed)) throw new Error(`${what} must be a whole number`);
    const value = Number(trimmed);
    if (!Number.isSafeInteger(value)) {
      throw new Error(
        `${what} over 2**53 - 1 (${Number.MAX_SAFE_INTEGER}) cannot be sent exactly from ` +
          "this page: use the API or the command line",
      );
    }
    return value;
  }

  function showError(message, where = byTestId("error")) {
    where.textContent = message ? oneLine(message) : "";
    where.hidden = !message;
  }

  // -- the API ------------------------------------------------------------------------------

  async function api(method, path, body) {
    const init = {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (exc) {
      throw new ApiError(0, `cannot reach the node: ${exc.message}`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const reason =
        data && typeof data.error === "string"
          ? data.error
          : `${response.status} ${response.statusText || "error"}`;
      if (response.status === 401) askToken(`the node refused the token: ${oneLine(reason)}`);
      throw new ApiError(response.status, oneLine(reason));
    }
    return data;
  }

  function channelPath(id, rest = "") {
    if (!HEX_ID.test(id)) throw new ApiError(0, `not a channel id: ${id}`);
    return `/v1/channels/${id}${rest}`;
  }

  // -- the token ----------------------------------------------------------------------------

  function tokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const found = fragment.get("token");
    if (found !== null) {
      // Out of the address bar (and so out of history and bookmarks) at once.
      history.replaceState(null, "", location.pathname + location.search);
      if (found) sessionStorage.setItem(TOKEN_KEY, found);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askToken(reason) {
    generation += 1;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (streamController) streamController.abort();
    setStream("not connected");
    byTestId("token-form").hidden = false;
    document.getElementById("app-area").hidden = true;
    showError(reason || "");
    byTestId("token-input").focus();
  }

  function useToken(value) {
    token = value;
    byTestId("token-form").hidden = true;
    document.getElementById("app-area").hidden = false;
    showError("");
    start(++generation);
  }

  // -- the node and its channels ------------------------------------------------------------

  async function start(gen) {
    try {
      const info = await api("GET", "/v1/info");
      if (gen !== generation) return;
      me = info.node_id;
      byTestId("node-id").textContent = info.node_id;
      byTestId("node-l1").textContent = info.l1;
      await refreshAll();
    } catch (exc) {
      if (exc.status !== 401) showError(exc.message);
    }
    if (gen === generation) stream(gen);
  }

  async function refreshAll() {
    const listed = await api("GET", "/v1/channels");
    for (const data of listed.channels) upsert(data);
  }

  async function refresh(id) {
    const running = refreshing.get(id);
    if (running) {
      running.again = true; // one more read once the current one is in
      return;
    }
    const state = { again: true };
    refreshing.set(id, state);
    try {
      while (state.again) {
        state.again = false;
        upsert(await api("GET", channelPath(id)));
      }
    } catch (exc) {
      const entry = channels.get(id);
      showError(exc.message, entry ? byTestId("channel-error", entry.el) : undefined);
    } finally {
      refreshing.delete(id);
    }
  }

  function upsert(data) {
    if (!data || typeof data.channel !== "string" || !HEX_ID.test(data.channel)) return;
    let entry = channels.get(data.channel);
    if (!entry) {
      entry = makeCard(data.channel);
      channels.set(data.channel, entry);
    }
    entry.data = data;
    render(entry);
    byTestId("no-channels").hidden = channels.size > 0;
  }

  // -- the event stream ---------------------------------------------------------------------

  function setStream(text) {
    byTestId("stream-status").textContent = text;
  }

  // Reads /v1/events with fetch() (an EventSource cannot send the Authorization header)
  // and parses the server-sent events itself; reconnects with a growing delay.
  async function stream(gen) {
    let delay = BACKOFF_FIRST_MS;
    while (gen === generation) {
      const controller = new AbortController();
      streamController = controller;
      try {
        const response = await fetch("/v1/events", {
          headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
          cache: "no-store",
          credentials: "omit",
          signal: controller.signal,
        });
        if (response.status === 401) {
          askToken("the node refused the token");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        setStream("live");
        delay = BACKOFF_FIRST_MS;
        // The stream carries only what happens from now: read the channels again, so
        // nothing between the last read (or a dropped stream) and now is missed.
        refreshAll().catch((exc) => showError(exc.message));
        await readEvents(response.body, gen);
        throw new Error("the stream ended");
      } catch (exc) {
        if (gen !== generation) return;
        const wait = delay + Math.floor(Math.random() * 250);
        setStream(`reconnecting in ${Math.ceil(wait / 1000)} s (${oneLine(exc.message)})`);
        await new Promise((resolve) => setTimeout(resolve, wait));
        delay = Math.min(delay * 2, BACKOFF_MAX_MS);
      }
    }
  }

  async function readEvents(body, gen) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let carry = ""; // a "\r" at a chunk's end may be the first half of "\r\n"
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== generation) return;
      let text = carry + value;
      carry = "";
      if (text.endsWith("\r")) {
        carry = "\r";
        text = text.slice(0, -1);
      }
      buffer += text.replace(/\r\n|\r/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(parseEvent(block));
      }
    }
  }

  // One event's lines: "event: KIND", "data: ..." (several are joined with newlines),
  // ": comment" ignored; a field's value loses one leading space.
  function parseEvent(block) {
    const event = { kind: "message", data: [] };
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.kind = value;
      else if (field === "data") event.data.push(value);
    }
    return event;
  }

  function dispatch(event) {
    if (event.data.length === 0) return;
    let data;
    try {
      data = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    if (data && typeof data.channel === "string" && HEX_ID.test(data.channel)) {
      // An l1 event's deadline stands in for a node whose channels carry none.
      const entry = channels.get(data.channel);
      if (entry && event.kind === "l1" && "deadline" in data) entry.l1Deadline = data.deadline;
      refresh(data.channel);
    }
  }

  // -- views --------------------------------------------------------------------------------

  // The app's view for this node (the "view" key). A node without the presentation hook
  // gives only the raw state: derive the bundled apps' views from it.
  function viewOf(entry) {
    const data = entry.data;
    if (data.view && typeof data.view === "object") return data.view;
    if (data.app === "payments" && data.outcome) {
      return { mine: data.outcome[me], theirs: data.outcome[data.peer] };
    }
    if (data.app === "tictactoe" && Array.isArray(data.state)) return gameView(entry);
    return data.state === null || data.state === undefined ? {} : { state: data.state };
  }

  const LINES = [
    [0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6],
  ];

  function winningLine(board) {
    return LINES.find(([a, b, c]) => board[a] && board[a] === board[b] && board[a] === board[c]);
  }

  function gameView(entry) {
    const [cells, turn] = entry.data.state;
    const toMove = entry.data.to_move;
    if (toMove) entry.party = toMove === me ? turn : 1 - turn;
    const board = cells.map((c) => (c === 1 ? "X" : c === 2 ? "O" : ""));
    const line = winningLine(board);
    const outcome = entry.data.outcome || {};
    if (entry.party === undefined && line) {
      entry.party = (outcome[me] || 0) > 0 === (board[line[0]] === "X") ? 0 : 1;
    }
    const you = entry.party === 1 ? "O" : "X";
    let winner = null;
    if (line) winner = board[line[0]] === you ? "you" : "peer";
    else if (board.every((c) => c)) winner = "draw";
    return { board, you, turn: toMove ? (toMove === me ? "you" : "peer") : null, winner };
  }

  // -- rendering ----------------------------------------------------------------------------

  function makeCard(id) {
    const el = document.getElementById("channel-template").content.firstElementChild.cloneNode(true);
    el.dataset.channel = id;
    el.setAttribute("aria-label", `Channel ${id}`);
    byTestId("channel-id", el).textContent = id;
    const entry = { data: null, el, party: undefined, busy: false, cells: [] };

    byTestId("channel-copy", el).addEventListener("click", (ev) => copy(id, ev.currentTarget));
    byTestId("pay-form", el).addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = byTestId("pay-amount", el);
      let amount;
      try {
        amount = wholeAmount(input.value, "the amount");
      } catch (exc) {
        showError(exc.message, byTestId("channel-error", el));
        return;
      }
      act(entry, channelPath(id, "/pay"), { amount }, () => {
        input.value = "";
      });
    });
    byTestId("send-form", el).addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = byTestId("send-command", el);
      let command;
      try {
        command = JSON.parse(input.value);
      } catch (exc) {
        showError(`the command is not JSON: ${exc.message}`, byTestId("channel-error", el));
        return;
      }
      act(entry, channelPath(id, "/commands"), { command, count: 1 }, () => {
        input.value = "";
      });
    });
    byTestId("close-coop", el).addEventListener("click", () =>
      act(entry, channelPath(id, "/close"), { unilateral: false }),
    );
    byTestId("close-unilateral", el).addEventListener("click", () => {
      const sure = window.confirm(
        "Close on L1 without the peer? The funds stay locked for the challenge window, " +
          "and in a game the player to move when it settles loses.",
      );
      if (sure) act(entry, channelPath(id, "/close"), { unilateral: true });
    });

    const board = byTestId("board", el);
    for (let i = 0; i < 9; i += 1) {
      const cell = document.createElement("button");
      cell.type = "button";
      cell.className = "cell";
      cell.dataset.testid = `cell-${i}`;
      cell.dataset.cell = String(i);
      cell.addEventListener("click", () =>
        act(entry, channelPath(id, "/commands"), { command: { cell: i }, count: 1 }),
      );
      board.append(cell);
      entry.cells.push(cell);
    }

    const list = byTestId("channels");
    list.prepend(el);
    return entry;
  }

  // A request on a channel: its buttons are disabled meanwhile; an error shows its reason.
  async function act(entry, path, body, done) {
    const errorEl = byTestId("channel-error", entry.el);
    showError("", errorEl);
    entry.busy = true;
    render(entry);
    try {
      const result = await api("POST", path, body);
      if (result && result.status === "closing") entry.closing = true;
      if (done) done(result);
    } catch (exc) {
      showError(exc.message, errorEl);
    } finally {
      entry.busy = false;
      render(entry);
      refresh(entry.data.channel);
    }
  }

  function render(entry) {
    const { data, el } = entry;
    if (!data) return;
    const view = viewOf(entry) || {};
    const finished = data.payouts !== null && data.payouts !== undefined;
    const set = (name, text) => {
      byTestId(name, el).textContent = text;
    };

    set("channel-app", APP_NAMES[data.app] || data.app);
    set("channel-phase", data.phase);
    el.dataset.phase = data.phase;
    el.dataset.app = data.app;
    set("channel-peer", data.peer);
    set("channel-seq", String(data.seq));
    set("channel-l1", data.l1 || "—");
    const pending = typeof data.pending === "number" ? data.pending : 0;
    byTestId("channel-pending-row", el).hidden = pending === 0;
    set("channel-pending", `${pending} command${pending === 1 ? "" : "s"} not yet signed by both`);

    const kind = data.app === "tictactoe" ? "game" : data.app === "payments" ? "payments" : "other";
    byTestId("payments-view", el).hidden = kind !== "payments";
    byTestId("game-view", el).hidden = kind !== "game";
    byTestId("other-view", el).hidden = kind !== "other";
    if (kind === "payments") renderPayments(entry, view, finished);
    else if (kind === "game") renderGame(entry, view, finished);
    else renderOther(entry, view, finished);

    const payouts = byTestId("channel-payouts", el);
    payouts.hidden = !finished;
    if (finished) {
      const mine = data.payouts[me];
      const theirs = data.payouts[data.peer];
      payouts.textContent = `Paid out on L1: you ${mine}, peer ${theirs}.`;
    } else if (entry.closing) {
      payouts.hidden = false;
      payouts.textContent = "Closing: waiting for L1 to pay out…";
    }
    for (const name of ["close-coop", "close-unilateral"]) {
      byTestId(name, el).disabled = entry.busy || finished;
    }
    renderDeadline(entry);
  }

  function renderPayments(entry, view, finished) {
    const { el } = entry;
    byTestId("view-mine", el).textContent = view.mine === undefined ? "—" : String(view.mine);
    byTestId("view-theirs", el).textContent = view.theirs === undefined ? "—" : String(view.theirs);
    byTestId("pay-submit", el).disabled = entry.busy || finished;
  }

  function renderGame(entry, view, finished) {
    const { el } = entry;
    const board = Array.isArray(view.board) ? view.board : Array(9).fill("");
    const mark = view.you || "?";
    const yourTurn = view.turn === "you" && !view.winner && !finished;
    const line = winningLine(board);
    entry.cells.forEach((cell, i) => {
      cell.classList.toggle("win", Boolean(line && line.includes(i)));
      const value = board[i] || "";
      cell.textContent = value;
      cell.dataset.mark = value;
      const row = Math.floor(i / 3) + 1;
      const column = (i % 3) + 1;
      cell.setAttribute("aria-label", `Row ${row}, column ${column}: ${value || "empty"}`);
      cell.disabled = entry.busy || !yourTurn || value !== "";
    });
    el.dataset.turn = view.turn || "";
    let status;
    if (view.winner) status = `Game over: you played ${mark}.`;
    else if (view.turn === "you") status = `Your move: you play ${mark}.`;
    else if (view.turn === "peer") status = `Their move: you play ${mark}.`;
    else status = "";
    byTestId("game-status", el).textContent = status;
    const stakes = byTestId("game-stakes", el);
    const staked = view.stakes && typeof view.stakes === "object";
    stakes.hidden = !staked;
    if (staked) {
      const { you, peer } = view.stakes;
      stakes.textContent = `Stakes: you ${you}, peer ${peer}; the winner takes ${you + peer}.`;
    }
    const winner = byTestId("game-winner", el);
    winner.hidden = !view.winner;
    winner.dataset.winner = view.winner || "";
    winner.textContent =
      view.winner === "you" ? "You won!" : view.winner === "peer" ? "They won." : view.winner === "draw" ? "A draw." : "";
  }

  function renderOther(entry, view, finished) {
    const { el } = entry;
    const fields = byTestId("view-fields", el);
    fields.replaceChildren();
    for (const [key, value] of Object.entries(view)) {
      const row = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = key;
      dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
      row.append(dt, dd);
      fields.append(row);
    }
    byTestId("send-submit", el).disabled = entry.busy || finished;
  }

  function renderDeadline(entry) {
    const { data, el } = entry;
    const line = byTestId("deadline", el);
    const finished = data.payouts !== null && data.payouts !== undefined;
    const deadline = "deadline" in data ? data.deadline : entry.l1Deadline;
    if (typeof deadline !== "number" || finished) {
      line.hidden = true;
      return;
    }
    const left = Math.round(deadline - Date.now() / 1000);
    const when = new Date(deadline * 1000).toLocaleTimeString();
    const span = left > 0 ? `in ${duration(left)} (at ${when})` : `passed (at ${when})`;
    let text;
    if (data.forced_seq !== null && data.forced_seq !== undefined) {
      const who = data.to_move === me ? "you" : data.to_move ? "the peer" : "the player to move";
      text = `A forced move is on L1: ${who} must answer, deadline ${span}.`;
    } else {
      text = `Challenge window ends ${span}.`;
    }
    line.textContent = text;
    line.dataset.seconds = String(Math.max(0, left));
    line.hidden = false;
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h}:${two(m)}:${two(s)}`;
    return `${m}:${two(s)}`;
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      area.readOnly = true;
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "Copied";
    setTimeout(() => {
      button.textContent = "Copy id";
    }, 1500);
  }

  // -- the open form ------------------------------------------------------------------------

  function setupOpenForm() {
    const form = byTestId("open-form");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = byTestId("open-status");
      const submit = byTestId("open-submit");
      let body;
      try {
        const peerDeposit = byTestId("open-peer-deposit").value.trim() || "0";
        body = {
          peer: byTestId("open-peer").value.trim(),
          peer_id: byTestId("open-peer-id").value.trim().toLowerCase(),
          app: byTestId("open-app").value,
          deposit: wholeAmount(byTestId("open-deposit").value, "the deposit"),
          peer_deposit: wholeAmount(peerDeposit, "the peer's deposit"),
          options: {},
        };
      } catch (exc) {
        showError(exc.message);
        return;
      }
      showError("");
      submit.disabled = true;
      status.textContent = "Opening: waiting for the peer and L1…";
      try {
        upsert(await api("POST", "/v1/channels", body));
        status.textContent = "Opened.";
      } catch (exc) {
        status.textContent = "";
        showError(exc.message);
      } finally {
        submit.disabled = false;
      }
    });
  }

  // -- start --------------------------------------------------------------------------------

  function main() {
    setupOpenForm();
    byTestId("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = byTestId("token-input").value.trim();
      byTestId("token-input").value = "";
      sessionStorage.setItem(TOKEN_KEY, value);
      useToken(value);
    });
    setInterval(() => {
      for (const entry of channels.values()) if (entry.data) renderDeadline(entry);
    }, 1000);
    const found = tokenFromFragment();
    if (found) useToken(found);
    else askToken("");
  }

  main();
})();
