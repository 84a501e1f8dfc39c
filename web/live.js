// Live status over the WebSocket (GET /api/v1/ws): the browser cannot set headers on an upgrade,
// so the key goes in the first message ({"type":"auth"}), never in the URL. Subscribes to the
// whole tenant and hands every StatusChanged event to the listeners; reconnects with `since` so
// nothing is missed across a drop.
import { session } from "./api.js";

const listeners = new Set();
let socket = null, seq = null, retry = 500;

export function onStatus(fn) { listeners.add(fn); connect(); return () => listeners.delete(fn); }

function connect() {
  if (socket || !session.key()) return;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws";
  socket = new WebSocket(url);
  socket.onopen = () => {
    retry = 500;
    socket.send(JSON.stringify({ type: "auth", apiKey: session.key() }));
    const sub = { type: "subscribe", id: 1, topic: "tenant" };
    if (seq !== null) sub.since = seq;
    socket.send(JSON.stringify(sub));
  };
  socket.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "event") {
      seq = m.seq;
      if (m.event === "StatusChanged") for (const fn of listeners) fn(m.data);
    } else if (m.type === "reset") {
      seq = null;
    }
  };
  socket.onclose = () => {
    socket = null;
    if (listeners.size && session.key()) setTimeout(connect, retry = Math.min(retry * 2, 10000));
  };
}

export function disconnect() { if (socket) socket.close(); socket = null; seq = null; }
