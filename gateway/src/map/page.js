// Draws the graph embedded in #graph: namespaces as columns, workloads as boxes in them,
// outside destinations in the last column, flows as curves coloured by kind. Every element
// has a <title> with the details; the table below lists every edge.
(function () {
  "use strict";
  const graph = JSON.parse(document.getElementById("graph").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const COL = 300, ROW = 56, NODE_W = 200, NODE_H = 34, TOP = 90, PAD = 20;
  const el = (name, attrs, parent) => {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  };
  const title = (parent, text) => { el("title", {}, parent).textContent = text; };

  const place = {};
  const rows = {};
  graph.groups.forEach((g, i) => { rows[g] = 0; place[g] = { x: PAD + i * COL }; });
  for (const n of graph.nodes) {
    const col = place[n.group];
    place[n.id] = { x: col.x + 20, y: TOP + 30 + rows[n.group] * ROW };
    rows[n.group] += 1;
  }
  const height = TOP + 50 + Math.max(1, ...Object.values(rows)) * ROW;
  const width = PAD * 2 + Math.max(1, graph.groups.length) * COL;
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}` });

  graph.groups.forEach((g) => {
    const grp = el("g", { class: "group", "data-group": g }, svg);
    el("rect", { x: place[g].x, y: TOP, width: COL - 30, height: height - TOP - 10, rx: 6 }, grp);
    el("text", { x: place[g].x + 10, y: TOP + 18 }, grp).textContent =
      g === "external" ? "outside the cluster" : `namespace ${g}`;
  });

  // Arrowheads, one per kind (a marker takes its colour from its own style).
  const defs = el("defs", {}, svg);
  for (const [kind, colour] of [["allowed", "#2e7d32"], ["denied", "#c62828"], ["staged", "#ef6c00"]]) {
    const m = el("marker", { id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: colour }, m);
  }
  const edges = el("g", { class: "edges" }, svg);
  const fanned = {};
  for (const e of graph.edges) {
    const a = place[e.from], b = place[e.to];
    if (!a || !b) continue;
    // Edges leave a node one above the other, each with a bend of its own, so that flows
    // between the same rows do not draw over each other or over the boxes between them.
    const i = (fanned[e.from] = (fanned[e.from] || 0) + 1) - 1;
    const rightward = b.x >= a.x;
    const x1 = rightward ? a.x + NODE_W : a.x, y1 = a.y + 8 + (i % 4) * 6;
    const x2 = rightward ? b.x : b.x + NODE_W, y2 = b.y + NODE_H / 2;
    const lift = a.y === b.y ? 24 + 12 * i : 0;
    const bend = Math.max(40, Math.abs(x2 - x1) / 3) * (rightward ? 1 : -1);
    const d = e.from === e.to
      ? `M ${x1} ${y1} c 40 -30 40 30 0 10`
      : `M ${x1} ${y1} C ${x1 + bend} ${y1 - lift}, ${x2 - bend} ${y2 - lift}, ${x2} ${y2}`;
    const p = el("path", { class: `edge ${e.kind}`, d, "data-from": e.from, "data-to": e.to,
      "marker-end": `url(#arrow-${e.kind})` }, edges);
    title(p, `${e.from} → ${e.to} ${e.port}/${e.protocol}: ${e.count} flows, ${e.kind}\n` +
      `decided by ${e.decided_by.join("; ")}` +
      (e.staged.length ? `\nstaged: ${e.staged.join("; ")}` : "") +
      (e.services.length ? `\nvia ${e.services.join(", ")}` : ""));
  }

  for (const n of graph.nodes) {
    const externalNode = n.group === "external";
    const g = el("g", { class: externalNode ? "node external" : "node", "data-id": n.id }, svg);
    el("rect", { x: place[n.id].x, y: place[n.id].y, width: NODE_W, height: NODE_H, rx: 4 }, g);
    const t = el("text", { x: place[n.id].x + 8, y: place[n.id].y + 21 }, g);
    t.textContent = n.label.length > 30 ? n.label.slice(0, 29) + "…" : n.label;
    title(g, `${n.id}` +
      (n.pods.length ? `\npods: ${n.pods.join(", ")}` : "") +
      (n.policies.length ? `\nselected by: ${n.policies.join("; ")}` : externalNode ? "" : "\nselected by no policy"));
  }
  document.getElementById("map").appendChild(svg);

  const body = document.querySelector("#edges tbody");
  const label = (id) => (graph.nodes.find((n) => n.id === id) || { id }).id;
  for (const e of graph.edges) {
    const tr = document.createElement("tr");
    tr.className = `edge-row ${e.kind}`;
    for (const [cls, text] of [
      ["from", label(e.from)], ["to", label(e.to)], ["port", `${e.port}/${e.protocol}`],
      ["count", String(e.count)], ["kind", e.kind], ["decided", e.decided_by.join("; ")],
      ["staged", e.staged.join("; ")], ["via", e.services.join(", ")],
    ]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  const kinds = { allowed: 0, denied: 0, staged: 0 };
  for (const e of graph.edges) kinds[e.kind] += 1;
  document.getElementById("summary").textContent =
    `${graph.groups.length} groups, ${graph.nodes.length} nodes, ${graph.edges.length} edges ` +
    `(${kinds.allowed} allowed, ${kinds.denied} denied, ${kinds.staged} staged)`;
  document.body.setAttribute("data-rendered", "true");
})();
