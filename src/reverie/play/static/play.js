// reverie play: one WebSocket session per tab. Protocol: docs/play.md.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("screen");
  const ctx = canvas.getContext("2d");
  const FPS_WINDOW_MS = 2000;

  // Exposed as window.reverie for the end-to-end tests and for debugging in the console.
  const state = {
    config: null,
    ws: null,
    session: null,
    streaming: false,
    busy: false,
    held: new Set(),
    seq: 0,
    keySentAt: new Map(), // key message seq -> performance.now() when sent
    arrivals: [], // performance.now() of frames received in the last FPS_WINDOW_MS
    frames: 0,
    stream: 0, // counts "ready" events: frames of an earlier stream are not drawn
    drawnFrame: -1,
    lastHeader: null,
    latencies: [], // key-to-frame latency samples, ms
    messages: [],
    snapshot: () => canvas.toDataURL(),
  };
  window.reverie = state;

  function setStatus(text) { $("status").textContent = text; }

  function showMessage(text, kind = "error", retry = false) {
    const box = $("message");
    box.textContent = text;
    box.className = kind;
    box.hidden = false;
    state.messages.push({ kind, text });
    if (retry) {
      const button = document.createElement("button");
      button.textContent = "Retry";
      button.style.marginLeft = "1em";
      button.onclick = () => { clearMessage(); connect(); };
      box.appendChild(button);
    }
  }

  function clearMessage() { $("message").hidden = true; }

  function updateButtons() {
    const open = state.ws && state.ws.readyState === WebSocket.OPEN && state.session;
    $("start").disabled = !open;
    $("stop").disabled = !(open && state.streaming);
    $("save").disabled = !(open && state.frames > 0);
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  // ---- connection ---------------------------------------------------------------------------
  function connect() {
    state.busy = false;
    state.session = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    setStatus("connecting…");
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") onEvent(JSON.parse(ev.data));
      else onFrame(ev.data);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.streaming = false;
      state.session = null;
      updateButtons();
      if (!state.busy) {
        setStatus("disconnected");
        showMessage("Connection to the server closed.", "error", true);
      }
    };
  }

  function onEvent(msg) {
    switch (msg.type) {
      case "hello":
        state.session = msg.session;
        setStatus("connected: choose a start image and press Start");
        break;
      case "busy":
        state.busy = true;
        setStatus("busy");
        showMessage(msg.message, "busy", true);
        break;
      case "ready":
        state.streaming = true;
        state.stream += 1;
        state.drawnFrame = -1;
        clearMessage();
        setStatus(`streaming · memory ${msg.memory}`);
        $("prompt-line").textContent = msg.prompt ? `“${msg.prompt}”` : "(empty prompt)";
        $("prompt-line").title = msg.prompt;
        canvas.focus();
        break;
      case "stopped":
        state.streaming = false;
        setStatus("stopped");
        break;
      case "error":
        if (msg.stopped) { state.streaming = false; setStatus("stopped"); }
        showMessage(msg.message);
        break;
      default:
        showMessage(`unexpected message from the server: ${msg.type}`);
    }
    updateButtons();
  }

  // ---- frames: uint32 header length | JSON header | JPEG -----------------------------------
  const decoder = new TextDecoder();

  function onFrame(buffer) {
    const now = performance.now();
    const n = new DataView(buffer).getUint32(0);
    const header = JSON.parse(decoder.decode(new Uint8Array(buffer, 4, n)));
    const jpeg = new Blob([new Uint8Array(buffer, 4 + n)], { type: "image/jpeg" });
    state.frames += 1;
    state.lastHeader = header;
    state.arrivals.push(now);
    while (state.arrivals[0] < now - FPS_WINDOW_MS) state.arrivals.shift();
    for (const [seq, sentAt] of state.keySentAt) {
      if (seq > header.seq) break; // Map keeps insertion (= seq) order
      if (seq === header.seq) state.latencies.push(now - sentAt);
      state.keySentAt.delete(seq);
    }
    // Acknowledge once drawn: the server keeps only a few frames in flight to a slow tab.
    const stream = state.stream;
    createImageBitmap(jpeg).then((bitmap) => {
      if (stream === state.stream && header.frame > state.drawnFrame) {
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
        state.drawnFrame = header.frame;
      }
      bitmap.close();
    }).catch(() => {}).finally(() => send({ type: "ack", frame: header.frame }));
    updateReadout(header);
    if (state.frames === 1) updateButtons();
  }

  function updateReadout(header) {
    const a = state.arrivals;
    const span = a.length > 1 ? (a[a.length - 1] - a[0]) / 1000 : 0;
    $("fps").textContent = span > 0 ? ((a.length - 1) / span).toFixed(1) : "–";
    const last = state.latencies[state.latencies.length - 1];
    $("latency").textContent = last === undefined ? "–" : `${last.toFixed(0)} ms`;
    $("step").textContent = header.step_ms ? `${header.step_ms.toFixed(0)} ms` : "–";
    $("cache").textContent = `${header.cache_tokens} tok / ${(header.cache_bytes / 2 ** 20).toFixed(2)} MiB`;
    $("frame").textContent = header.frame;
    $("dropped").textContent = header.dropped;
  }

  // ---- keyboard -------------------------------------------------------------------------------
  function typing(target) {
    const tag = target && target.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    return tag === "INPUT" && !["range", "radio", "button"].includes(target.type);
  }

  function sendKeys() {
    state.seq += 1;
    state.keySentAt.set(state.seq, performance.now());
    if (state.keySentAt.size > 256) state.keySentAt.delete(state.keySentAt.keys().next().value);
    send({ type: "keys", keys: [...state.held], seq: state.seq });
    $("held-keys").textContent = state.held.size ? [...state.held].join(" + ") : "none";
  }

  window.addEventListener("keydown", (e) => {
    if (!state.config || !(e.code in state.config.keys) || typing(e.target)) return;
    e.preventDefault();
    if (state.held.has(e.code)) return; // auto-repeat
    state.held.add(e.code);
    sendKeys();
  });
  window.addEventListener("keyup", (e) => {
    if (!state.held.has(e.code)) return;
    e.preventDefault();
    state.held.delete(e.code);
    sendKeys();
  });
  window.addEventListener("blur", () => {
    if (state.held.size) { state.held.clear(); sendKeys(); }
  });
  canvas.addEventListener("click", () => canvas.focus());

  // ---- start panel ------------------------------------------------------------------------------
  let previewTimer = null;
  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const seed = Number($("seed").value);
      if (!Number.isInteger(seed) || seed < 0) return;
      try {
        const r = await fetch(`/api/scene/${seed}`);
        const body = await r.json();
        if (!r.ok) throw new Error(body.detail || r.statusText);
        $("preview").src = body.image;
        $("prompt").placeholder = `empty: “${body.caption}”`;
      } catch (err) {
        showMessage(`scene preview failed: ${err.message}`);
      }
    }, 300);
  }
  $("seed").addEventListener("input", schedulePreview);

  $("start-panel").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearMessage();
    const message = { type: "start", memory: $("memory").value, gamma: Number($("gamma").value) };
    const prompt = $("prompt").value.trim();
    if (prompt) message.prompt = prompt;
    const source = document.querySelector("input[name=source]:checked").value;
    if (source === "scene") {
      const seed = Number($("seed").value);
      if (!Number.isInteger(seed) || seed < 0 || seed > 2147483647) {
        showMessage("The scene seed must be an integer from 0 to 2147483647.");
        return;
      }
      message.scene_seed = seed;
    } else {
      const file = $("file").files[0];
      if (!file) { showMessage("Choose an image file to upload."); return; }
      const limit = state.config.max_upload_bytes;
      if (file.size > limit) {
        showMessage(`Image too large: ${(file.size / 2 ** 20).toFixed(1)} MB (limit ${(limit / 2 ** 20).toFixed(0)} MB).`);
        return;
      }
      setStatus("uploading…");
      const r = await fetch("/api/upload", { method: "POST", body: file });
      const body = await r.json().catch(() => ({ detail: r.statusText }));
      if (!r.ok) { setStatus("upload failed"); showMessage(`Upload failed: ${body.detail}`); return; }
      message.upload_id = body.upload_id;
    }
    setStatus("starting…");
    send(message);
  });

  $("gamma").addEventListener("input", () => {
    const gamma = Number($("gamma").value);
    $("gamma-value").textContent = gamma.toFixed(2);
    if (state.streaming) send({ type: "gamma", gamma });
  });
  $("stop").addEventListener("click", () => send({ type: "stop" }));

  $("save").addEventListener("click", async () => {
    const files = [["clip.mp4", "reverie-clip.mp4"], ["actions.json", "reverie-clip-actions.json"]];
    for (const [path, name] of files) {
      const r = await fetch(`/api/sessions/${state.session}/${path}`);
      if (!r.ok) {
        const body = await r.json().catch(() => ({ detail: r.statusText }));
        showMessage(`Save clip failed: ${body.detail}`);
        return;
      }
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    }
  });

  // ---- boot -------------------------------------------------------------------------------------
  async function boot() {
    try {
      const r = await fetch("/api/config");
      state.config = await r.json();
    } catch (err) {
      showMessage(`cannot reach the server: ${err.message}`);
      return;
    }
    const select = $("memory");
    for (const name of state.config.memory_policies) select.add(new Option(name, name));
    select.value = state.config.default_memory;
    const [lo, hi] = state.config.gamma_range;
    Object.assign($("gamma"), { min: lo, max: hi });
    schedulePreview();
    connect();
  }
  boot();
})();
