// k6 provides `console` at runtime, but @types/k6 does not declare it (and these scripts do not
// load the DOM or Node typings), so declare the small part the scripts use.
declare global {
  var console: {
    log(...args: unknown[]): void;
    info(...args: unknown[]): void;
    warn(...args: unknown[]): void;
    error(...args: unknown[]): void;
  };
}

export {};
