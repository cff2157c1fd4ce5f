// The listening room: plain JavaScript over Encore's public HTTP API (no build step, no
// outside requests). Flow: search the catalog (GET /v1/tracks) -> play a track ->
// POST /v1/recommend from it -> the person answers the pick with a feedback button
// (POST /v1/feedback) -> the pick becomes what is playing -> recommend from it, and so on.
// GET /v1/health is polled so a promotion made elsewhere shows within seconds.
"use strict";

const POLL_MS = 2000;
const PAGE_SIZE = 10;
const EXCLUDE_RECENT = 20; // recently played tracks not to be offered again
// What each button reports (services/schemas.py FeedbackRequest; skip_level 3 = played
// through, 1 = skipped early).
const FEEDBACK = {
  played: { listen_fraction: 1.0, liked: false, skip_level: 3, label: "played through" },
  skipped: { listen_fraction: 0.1, liked: false, skip_level: 1, label: "skipped" },
  liked: { listen_fraction: 1.0, liked: true, skip_level: 3, label: "liked" },
};
// Candidate fields the page knows; any other field a newer server adds is shown too.
const KNOWN_CANDIDATE_FIELDS = new Set(["track_id", "score", "distance", "track_name", "track_artist"]);
const LONG_TERM_FIELDS = ["long_term", "long_term_value", "long_term_estimate", "expected_return_days", "return_days"];
const SOURCE_FIELDS = ["source", "candidate_source", "sources", "retrieved_by", "origin"];

const state = {
  userId: null,
  query: "",
  page: 1,
  playing: null, // {track_id, track_name, track_artist}
  response: null, // the last RecommendResponse
  history: [], // {track, action, reward, listened, version}
  serving: null, // model version from /v1/health
  usersEndpoint: true, // false once GET /v1/users/{id} is known not to exist
  busy: false,
};

const $ = (id) => document.getElementById(id);
const knownTracks = new Map(); // track_id -> {track_id, track_name, track_artist} seen on this page
const SECONDS_PER_DAY = 86400;

function remember(track) {
  if (track && track.track_id && (track.track_name || track.track_artist)) knownTracks.set(track.track_id, track);
}

function nameOf(trackId) {
  const track = knownTracks.get(trackId);
  return track ? trackLabel(track) : trackId;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key === "style") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, detail);
  }
  return data;
}

function showError(message) {
  const box = $("error");
  if (!message) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = message;
  box.hidden = false;
}

function trackLabel(track) {
  const name = track.track_name || track.track_id;
  return track.track_artist ? `${name} — ${track.track_artist}` : name;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits === undefined ? 3 : digits);
  if (Array.isArray(value)) return value.map((v) => fmt(v, 2)).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function firstField(candidate, names) {
  for (const name of names) if (candidate[name] !== undefined && candidate[name] !== null) return [name, candidate[name]];
  return null;
}

// -- search ----------------------------------------------------------------------------
async function search(query, page) {
  state.query = query;
  state.page = page;
  const params = new URLSearchParams({ q: query, page: String(page), page_size: String(PAGE_SIZE) });
  const summary = $("search-summary");
  summary.textContent = "Searching…";
  try {
    const result = await api("GET", `/v1/tracks?${params}`);
    renderSearch(result);
    showError(null);
  } catch (err) {
    summary.textContent = "";
    $("search-results").replaceChildren();
    showError(`Search: ${err.detail || err.message}`);
  }
}

function renderSearch(result) {
  result.tracks.forEach(remember);
  const pages = Math.max(1, Math.ceil(result.total / result.page_size));
  $("search-summary").textContent = result.total
    ? `${result.total} track${result.total === 1 ? "" : "s"} match “${result.query}” (page ${result.page} of ${pages})`
    : `No track matches “${result.query}”.`;
  const list = $("search-results");
  list.replaceChildren(
    ...result.tracks.map((track) =>
      el(
        "li",
        { class: "track" },
        el("span", { class: "title" }, track.track_name || track.track_id),
        el("span", { class: "artist" }, track.track_artist || ""),
        el("button", { type: "button", class: "play", onclick: () => play(track), "data-track": track.track_id }, "Play")
      )
    )
  );
  $("search-prev").disabled = result.page <= 1;
  $("search-next").disabled = result.page >= pages;
}

// -- recommend -------------------------------------------------------------------------
function play(track) {
  state.playing = track;
  $("now-playing").textContent = trackLabel(track);
  $("now-playing").classList.remove("muted");
  return recommend();
}

async function recommend() {
  if (!state.playing) return;
  const recent = state.history.slice(-EXCLUDE_RECENT).map((h) => h.track.track_id).filter((id) => id !== state.playing.track_id);
  const body = { user_id: state.userId, track_id: state.playing.track_id, mode: $("mode").value, exclude: [...new Set(recent)] };
  setBusy(true);
  try {
    let response;
    try {
      response = await api("POST", "/v1/recommend", body);
    } catch (err) {
      if (err.status !== 422 || !body.exclude.length) throw err;
      response = await api("POST", "/v1/recommend", { ...body, exclude: [] }); // every neighbour was played already
    }
    state.response = response;
    renderRecommendation(response);
    showError(null);
  } catch (err) {
    showError(`Recommend: ${err.detail || err.message}`);
  } finally {
    setBusy(false);
  }
}

function renderRecommendation(response) {
  response.candidates.forEach(remember);
  const pick = response.candidates[response.chosen_rank];
  $("up-next").hidden = false;
  $("pick").textContent = trackLabel(pick);
  const critic = response.value === null || response.value === undefined ? "no critic" : `critic V(state) ${fmt(response.value)}`;
  $("answered-by").textContent = `answered by ${response.model_version} (${response.policy}), arm ${response.arm || "none"}, ${critic}, pick drawn ${{ greedy: "greedily", sample: "from the policy" }[response.mode] || "greedily with a little exploration"}`;
  $("ask-again").disabled = false;
  const list = $("recommendations");
  list.replaceChildren(
    ...response.candidates.map((candidate, rank) => {
      const facts = [
        ["probability", fmt(candidate.score)],
        ["critic V(state)", fmt(response.value)],
      ];
      const longTerm = firstField(candidate, LONG_TERM_FIELDS);
      if (longTerm) facts.push(["long-term (return days)", fmt(longTerm[1], 2)]);
      const source = firstField(candidate, SOURCE_FIELDS);
      if (source) facts.push(["source", fmt(source[1])]);
      const shown = new Set([...(longTerm ? [longTerm[0]] : []), ...(source ? [source[0]] : [])]);
      for (const [key, value] of Object.entries(candidate)) {
        if (!KNOWN_CANDIDATE_FIELDS.has(key) && !shown.has(key)) facts.push([key.replace(/_/g, " "), fmt(value)]);
      }
      facts.push(["distance", fmt(candidate.distance)]);
      const isPick = rank === response.chosen_rank;
      return el(
        "li",
        { class: isPick ? "candidate pick-row" : "candidate", "data-track": candidate.track_id },
        el("div", { class: "who" },
          el("span", { class: "title" }, candidate.track_name || candidate.track_id),
          el("span", { class: "artist" }, candidate.track_artist || ""),
          isPick ? el("span", { class: "badge" }, "pick") : null),
        el("div", { class: "bar-track", title: `policy probability ${fmt(candidate.score)}` },
          el("div", { class: "bar-fill", style: `width:${Math.round(100 * Math.max(0, Math.min(1, candidate.score)))}%` })),
        el("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))
      );
    })
  );
  renderServing();
}

// -- feedback --------------------------------------------------------------------------
async function sendFeedback(kind) {
  const response = state.response;
  if (!response || state.busy) return;
  const how = FEEDBACK[kind];
  const pick = response.candidates[response.chosen_rank];
  setBusy(true);
  let ack;
  try {
    ack = await api("POST", "/v1/feedback", {
      request_id: response.request_id,
      track_id: response.chosen_track_id,
      listen_fraction: how.listen_fraction,
      liked: how.liked,
      skip_level: how.skip_level,
    });
  } catch (err) {
    setBusy(false);
    showError(`Feedback: ${err.detail || err.message}`);
    return;
  }
  setBusy(false);
  state.history.push({ track: pick, action: how.label, reward: ack.reward, listened: ack.listened, version: response.model_version });
  renderHistory();
  // The song just answered is the one playing now; the next recommendation follows it.
  await play(pick);
  await refreshListener();
}

function renderHistory() {
  $("history").replaceChildren(
    ...state.history
      .slice()
      .reverse()
      .map((h) =>
        el("li", { class: `history-${h.action.replace(/ /g, "-")}` },
          el("span", { class: "title" }, trackLabel(h.track)),
          el("span", { class: "muted small" }, ` ${h.action}, reward ${fmt(h.reward, 2)}${h.listened ? ", counts as a listen" : ""} (${h.version})`))
      )
  );
}

// -- the listener's state --------------------------------------------------------------
async function refreshListener() {
  const box = $("listener-state");
  if (state.usersEndpoint) {
    try {
      const listener = await api("GET", `/v1/users/${encodeURIComponent(state.userId)}`);
      box.replaceChildren(listener.relationships ? renderListener(listener) : renderValue(listener, 0));
      return;
    } catch (err) {
      // A 404 from FastAPI's router ("Not Found") means the server has no such endpoint;
      // any other 404 names the user (not seen yet).
      if (err.status === 404 && err.detail === "Not Found") state.usersEndpoint = false;
      else if (err.status === 404) {
        box.replaceChildren(el("p", { class: "muted" }, `${state.userId}: no listening yet.`));
        return;
      } else {
        box.replaceChildren(el("p", { class: "muted" }, `listener state unavailable: ${err.detail || err.message}`));
        return;
      }
    }
  }
  box.replaceChildren(localSummary());
}

function localSummary() {
  // The server does not publish listener state: summarise what this page sent and got back.
  const counts = { "played through": 0, skipped: 0, liked: 0 };
  let reward = 0;
  let listens = 0;
  const perTrack = new Map();
  for (const h of state.history) {
    counts[h.action] += 1;
    reward += h.reward;
    if (h.listened) {
      listens += 1;
      const key = h.track.track_id;
      perTrack.set(key, { track: h.track, listens: (perTrack.get(key)?.listens || 0) + 1 });
    }
  }
  return el("div", {},
    el("p", { class: "muted small" }, "From this page's session (this server has no GET /v1/users/{id}):"),
    el("dl", { class: "facts" },
      el("dt", {}, "user"), el("dd", {}, state.userId),
      el("dt", {}, "listens"), el("dd", {}, listens),
      el("dt", {}, "played through / skipped / liked"), el("dd", {}, `${counts["played through"]} / ${counts.skipped} / ${counts.liked}`),
      el("dt", {}, "total reward"), el("dd", {}, fmt(reward, 2))),
    perTrack.size
      ? el("ul", { class: "small" }, ...[...perTrack.values()].map((t) => el("li", {}, `${trackLabel(t.track)}: ${t.listens} listen${t.listens === 1 ? "" : "s"}`)))
      : null);
}

// GET /v1/users/{id} (services/schemas.py UserResponse): listens, taste, the relationship
// state per song (one value per forgetting factor beta, as of the start of today) and the
// latest decisions. A song listened today moves tomorrow, s' = beta*s + (1 - beta) (the
// paper's update), shown beside it so a person sees the states grow as they listen.
function renderListener(user) {
  const today = Math.floor(Date.now() / 1000 / SECONDS_PER_DAY);
  const betas = user.betas || [];
  const rows = user.relationships.map((r) => {
    const listenedToday = r.last_listened_day >= today;
    const tomorrow = listenedToday ? r.state.map((v, i) => betas[i] * v + (1 - betas[i])) : null;
    const ago = today - r.last_listened_day;
    return el("li", { "data-track": r.track_id },
      el("div", { class: "title rel-song" }, nameOf(r.track_id)),
      el("div", { class: "small" }, el("span", { class: "muted" }, "now "), el("span", { class: "rel-now" }, stateBars(r.state))),
      tomorrow
        ? el("div", { class: "small" }, el("span", { class: "muted" }, "after today "), el("span", { class: "rel-next" }, stateBars(tomorrow)))
        : null,
      el("div", { class: "small muted rel-last" }, `last listened ${ago <= 0 ? "today" : ago === 1 ? "yesterday" : `${ago} days ago`}`));
  });
  const decisions = (user.recent_decisions || []).slice(0, 5).map((d) =>
    el("tr", {},
      el("td", {}, d.position),
      el("td", {}, nameOf(d.current_track_id)),
      el("td", {}, nameOf(d.chosen_track_id)),
      el("td", {}, `${d.policy_version}${d.arm ? ` / ${d.arm}` : ""}`)));
  return el("div", { class: "listener" },
    el("dl", { class: "facts" },
      el("dt", {}, "listens counted"), el("dd", { id: "listener-listens" }, user.listens),
      el("dt", {}, "songs with a relationship"), el("dd", {}, user.relationships.length),
      el("dt", {}, "taste (latent)"), el("dd", {}, fmt(user.taste))),
    el("h3", {}, "Relationship states"),
    el("p", { class: "muted small" }, `one value per forgetting factor β = ${betas.map((b) => b.toFixed(2)).join(", ")}; s' = β·s + (1 − β) on a day with a listen`),
    rows.length
      ? el("ul", { class: "relationships", id: "relationships" }, ...rows)
      : el("p", { class: "muted small" }, "None yet: a song played through (or liked) starts one."),
    decisions.length
      ? el("div", {},
          el("h3", {}, "Latest decisions"),
          el("div", { class: "table-wrap" },
            el("table", { class: "small" },
              el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "from"), el("th", {}, "pick"), el("th", {}, "version / arm"))),
              el("tbody", {}, ...decisions))))
      : null);
}

function stateBars(values) {
  return el("span", { class: "states", title: values.map((v) => v.toFixed(3)).join(", ") },
    ...values.map((v) => el("span", { class: "state" }, el("span", { class: "state-fill", style: `height:${Math.round(100 * Math.max(0, Math.min(1, v)))}%` }))),
    el("span", { class: "small" }, ` ${values.map((v) => v.toFixed(2)).join(" ")}`));
}

// Renders whatever shape GET /v1/users/{id} returns: scalars as a definition list, lists of
// records as tables, numbers in [0, 1] inside relationship lists with a small bar.
function renderValue(value, depth) {
  if (Array.isArray(value)) {
    if (!value.length) return el("span", { class: "muted" }, "none");
    if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return el("div", { class: "table-wrap" },
        el("table", { class: "small" },
          el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", {}, k.replace(/_/g, " "))))),
          el("tbody", {}, ...value.map((row) => el("tr", {}, ...keys.map((k) => el("td", {}, cell(row[k]))))))));
    }
    return el("span", {}, fmt(value));
  }
  if (value && typeof value === "object") {
    const list = el("dl", { class: depth ? "facts nested" : "facts" });
    for (const [key, v] of Object.entries(value)) {
      list.append(el("dt", {}, key.replace(/_/g, " ")), el("dd", {}, v && typeof v === "object" ? renderValue(v, depth + 1) : fmt(v)));
    }
    return list;
  }
  return el("span", {}, fmt(value));
}

function cell(value) {
  if (Array.isArray(value) && value.length && value.every((v) => typeof v === "number" && v >= 0 && v <= 1)) return stateBars(value);
  return fmt(value);
}

// -- the serving version (promotions) --------------------------------------------------
async function pollServing() {
  try {
    const health = await api("GET", "/v1/health");
    const before = state.serving;
    state.serving = health.model_version;
    $("serving-status").textContent = "";
    if (before !== null && before !== state.serving) {
      const banner = $("promotion");
      banner.textContent = `Promotion: now serving ${state.serving} (was ${before}) since ${new Date().toLocaleTimeString()}. The next recommendation comes from it.`;
      banner.hidden = false;
    }
  } catch (err) {
    $("serving-status").textContent = "(server unreachable)";
  }
  renderServing();
}

function renderServing() {
  $("serving-version").textContent = state.serving || "…";
  const answered = state.response && state.response.model_version;
  const stale = answered && state.serving && answered !== state.serving;
  $("answered-by").classList.toggle("stale", Boolean(stale));
  $("ask-again").textContent = stale ? `Ask ${state.serving}` : "Ask again";
}

// -- wiring ----------------------------------------------------------------------------
function setBusy(busy) {
  state.busy = busy;
  for (const id of ["btn-played", "btn-skipped", "btn-liked", "ask-again"]) $(id).disabled = busy || !state.response;
  document.body.classList.toggle("busy", busy);
}

function setUser(userId) {
  state.userId = userId;
  try {
    localStorage.setItem("encore.user", userId);
  } catch (err) {
    /* private windows may refuse storage: the id just isn't remembered */
  }
  $("user-id").value = userId;
  state.history = [];
  renderHistory();
  refreshListener();
}

function init() {
  let saved = null;
  try {
    saved = localStorage.getItem("encore.user");
  } catch (err) {
    saved = null;
  }
  setUser(saved || `listener-${Math.random().toString(36).slice(2, 8)}`);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-input").value.trim();
    if (query) search(query, 1);
  });
  $("search-prev").addEventListener("click", () => search(state.query, state.page - 1));
  $("search-next").addEventListener("click", () => search(state.query, state.page + 1));
  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const userId = $("user-id").value.trim();
    if (userId) setUser(userId);
  });
  for (const button of document.querySelectorAll("[data-feedback]")) {
    button.addEventListener("click", () => sendFeedback(button.dataset.feedback));
  }
  $("ask-again").addEventListener("click", () => recommend());
  setBusy(false);
  pollServing();
  setInterval(pollServing, POLL_MS);
}

document.addEventListener("DOMContentLoaded", init);
