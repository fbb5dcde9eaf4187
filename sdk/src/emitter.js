// @ts-check

/** Named events and their listeners; a listener that throws is logged and the others still
 * run. */
export class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  /** Listen for an event; returns a function that removes the listener. */
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return () => this.off(name, fn);
  }
  off(name, fn) {
    this._handlers.get(name)?.delete(fn);
  }
  _emit(name, value) {
    for (const fn of [...(this._handlers.get(name) || [])]) {
      try {
        fn(value);
      } catch (e) {
        console.error(e);
      }
    }
  }
}
