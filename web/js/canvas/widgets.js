// Widgets as real form controls: number fields (typed, dragged, stepped, clamped), text and multiline text,
// checkboxes, combos (with missing values kept visible), the seed's control-after-generate combo and the image
// upload button. Each calls `onChange(widget)` after writing `widget.value`.

const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
};

/** Clamp and round a number the way the widget's options ask (INT → integer on the step grid). */
export function normaliseNumber(value, widget) {
  const o = widget.spec?.options || {};
  let v = Number(value);
  if (!Number.isFinite(v)) return widget.value;
  if (widget.type === "INT") {
    const step = Number(o.step) > 0 ? Number(o.step) : 1;
    const base = typeof o.min === "number" && Number.isFinite(o.min) ? o.min : 0;
    v = step > 1 ? base + Math.round((v - base) / step) * step : Math.round(v);
  } else {
    const r = typeof o.round === "number" && o.round > 0 ? o.round : null;
    if (r) v = Math.round(v / r) * r;
    v = Number(v.toPrecision(12)); // drop binary noise such as 0.30000000000000004
  }
  if (typeof o.min === "number" && v < o.min) v = o.min;
  if (typeof o.max === "number" && v > o.max) v = o.max;
  return v;
}

function stepOf(widget) {
  const o = widget.spec?.options || {};
  const s = Number(o.step);
  if (s > 0) return s;
  return widget.type === "INT" ? 1 : 0.01;
}

function formatNumber(v, widget) {
  if (widget.type === "INT") return String(v);
  const step = stepOf(widget);
  const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)));
  const r = widget.spec?.options?.round;
  const rd = typeof r === "number" && r > 0 ? Math.ceil(-Math.log10(r) - 1e-9) : 0;
  return Number(v).toFixed(Math.max(decimals, rd, 0)).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

function numberWidget(widget, onChange) {
  const root = el("div", "widget widget-number");
  const dec = el("button", "widget-step dec", "‹");
  const label = el("span", "widget-label", widget.name);
  const input = el("input");
  input.type = "text";
  input.inputMode = "decimal";
  input.spellcheck = false;
  const inc = el("button", "widget-step inc", "›");
  dec.tabIndex = inc.tabIndex = -1;
  const show = () => { input.value = formatNumber(widget.value, widget); };
  const set = (v) => {
    const n = normaliseNumber(v, widget);
    const changed = n !== widget.value;
    widget.value = n;
    show();
    if (changed) onChange(widget);
  };
  show();
  input.addEventListener("change", () => set(input.value.trim() === "" ? widget.value : input.value));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") input.blur();
    else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      e.preventDefault();
      set(Number(widget.value) + (e.key === "ArrowUp" ? 1 : -1) * stepOf(widget));
    }
  });
  dec.addEventListener("click", () => set(Number(widget.value) - stepOf(widget)));
  inc.addEventListener("click", () => set(Number(widget.value) + stepOf(widget)));
  // drag the label sideways to change the value: one step per 6 px (shift: 10 steps)
  label.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    e.stopPropagation();
    label.setPointerCapture(e.pointerId);
    const start = e.clientX, from = Number(widget.value);
    let moved = false;
    const move = (ev) => {
      const steps = Math.trunc((ev.clientX - start) / 6) * (ev.shiftKey ? 10 : 1);
      if (steps !== 0) moved = true;
      const n = normaliseNumber(from + steps * stepOf(widget), widget);
      widget.value = n;
      show();
    };
    const up = () => {
      label.removeEventListener("pointermove", move);
      label.removeEventListener("pointerup", up);
      if (moved && widget.value !== from) onChange(widget);
      else input.focus();
    };
    label.addEventListener("pointermove", move);
    label.addEventListener("pointerup", up);
  });
  root.append(dec, label, input, inc);
  root.refresh = show;
  return root;
}

function textWidget(widget, onChange) {
  const multiline = !!widget.spec?.options?.multiline;
  const root = el("div", multiline ? "widget widget-text multiline" : "widget widget-text");
  const input = el(multiline ? "textarea" : "input");
  if (!multiline) {
    input.type = "text";
    root.append(el("span", "widget-label", widget.name));
  } else {
    input.placeholder = widget.name;
    input.rows = 3;
  }
  input.spellcheck = false;
  input.value = widget.value ?? "";
  input.addEventListener("change", () => { widget.value = input.value; onChange(widget); });
  // keep canvas shortcuts (delete, ctrl+z) out of the text field
  input.addEventListener("keydown", (e) => e.stopPropagation());
  root.append(input);
  root.refresh = () => { input.value = widget.value ?? ""; };
  return root;
}

function booleanWidget(widget, onChange) {
  const root = el("label", "widget widget-boolean");
  const input = el("input");
  input.type = "checkbox";
  input.checked = !!widget.value;
  input.addEventListener("change", () => { widget.value = input.checked; onChange(widget); });
  root.append(el("span", "widget-label", widget.name), input);
  root.refresh = () => { input.checked = !!widget.value; };
  return root;
}

function fillOptions(select, choices, value) {
  select.textContent = "";
  const list = [...(choices || [])];
  const missing = value !== undefined && value !== null && value !== "" && !list.some((c) => String(c) === String(value));
  if (missing) list.unshift(value);
  for (const c of list) {
    const opt = el("option", null, String(c));
    opt.value = String(c);
    select.append(opt);
  }
  select.value = value == null ? "" : String(value);
  select.classList.toggle("missing", missing);
  select.title = missing ? `"${value}" is not in the list (anymore)` : "";
}

function comboWidget(widget, onChange) {
  const root = el("div", "widget widget-combo");
  const select = el("select");
  fillOptions(select, widget.spec?.choices, widget.value);
  select.addEventListener("change", () => {
    const choice = (widget.spec?.choices || []).find((c) => String(c) === select.value);
    widget.value = choice !== undefined ? choice : select.value;
    select.classList.remove("missing");
    onChange(widget);
  });
  select.addEventListener("keydown", (e) => e.stopPropagation());
  root.append(el("span", "widget-label", widget.control ? "control after generate" : widget.name), select);
  root.refresh = () => fillOptions(select, widget.spec?.choices, widget.value);
  return root;
}

function uploadWidget(widget, onUpload) {
  const root = el("div", "widget widget-upload");
  const button = el("button", "upload-button", "choose file to upload");
  const file = el("input");
  file.type = "file";
  file.accept = "image/*";
  file.hidden = true;
  button.addEventListener("click", () => file.click());
  file.addEventListener("change", () => {
    if (file.files && file.files[0]) onUpload(widget, file.files[0]);
    file.value = "";
  });
  root.append(button, file);
  root.refresh = () => {};
  return root;
}

/** The DOM element for one widget: `.widget[data-name]` holding the control. */
export function createWidget(widget, { onChange, onUpload }) {
  let root;
  if (widget.upload) root = uploadWidget(widget, onUpload);
  else if (widget.type === "INT" || widget.type === "FLOAT") root = numberWidget(widget, onChange);
  else if (widget.type === "BOOLEAN") root = booleanWidget(widget, onChange);
  else if (widget.type === "COMBO") root = comboWidget(widget, onChange);
  else root = textWidget(widget, onChange);
  root.dataset.name = widget.name;
  root.dataset.type = widget.type;
  const tip = widget.spec?.tooltip || widget.spec?.options?.tooltip;
  if (tip) root.title = tip;
  return root;
}
