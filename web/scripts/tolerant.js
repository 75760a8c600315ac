// Forgiving stand-ins for ComfyUI frontend objects that packs' JS pokes at. An unknown property is a no-op that can
// be read, called, constructed or chained (`app.ui.settings.addSetting(...)`) without throwing, so a pack written
// against APIs we lack loads and does what it can instead of breaking the editor.

const QUIET = new Set(["then", "toJSON", "constructor", "prototype", "$$typeof", "nodeType", "length"]);

/** A callable, chainable no-op. Not thenable (awaiting it gives itself back, not a hang). */
export function noop(name = "unknown") {
  const target = function () {};
  return new Proxy(target, {
    get(_t, prop) {
      if (prop === Symbol.toPrimitive) return (hint) => (hint === "number" ? 0 : "");
      if (prop === Symbol.iterator) return function* empty() {};
      if (typeof prop === "symbol" || QUIET.has(prop)) return undefined;
      if (prop === "toString" || prop === "valueOf") return () => "";
      return noop(`${name}.${String(prop)}`);
    },
    apply: () => noop(`${name}()`),
    construct: () => noop(`new ${name}`),
    set: () => true,
    has: () => false,
    deleteProperty: () => true,
  });
}

/** Wrap `target` so that its own members behave normally (methods bound to it) and missing ones are no-ops. */
export function tolerant(target, name = "object") {
  const bound = new WeakMap();
  return new Proxy(target, {
    get(t, prop) {
      if (prop in t) {
        const value = Reflect.get(t, prop, t);
        if (typeof value !== "function" || /^class[\s{]/.test(Function.prototype.toString.call(value))) return value;
        let wrapper = bound.get(value);
        if (!wrapper) {
          wrapper = value.bind(t);
          bound.set(value, wrapper);
        }
        return wrapper;
      }
      if (typeof prop === "symbol" || QUIET.has(prop)) return undefined;
      return noop(`${name}.${prop}`);
    },
    set(t, prop, value) {
      t[prop] = value;
      return true;
    },
  });
}
