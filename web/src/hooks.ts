import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { problem, type Problem } from "./errors.js";

/** Runs `load` when `deps` change; `reload` runs it again. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): {
  value: T | undefined;
  error: Problem | undefined;
  loading: boolean;
  reload: () => void;
} {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<Problem | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const current = useRef(0);
  useEffect(() => {
    const run = ++current.current;
    setLoading(true);
    load().then(
      (v) => {
        if (run !== current.current) return;
        setValue(v);
        setError(undefined);
        setLoading(false);
      },
      (e: unknown) => {
        if (run !== current.current) return;
        setError(problem(e));
        setLoading(false);
      },
    );
  }, [...deps, tick]);
  return { value, error, loading, reload: useCallback(() => setTick((t) => t + 1), []) };
}

/** An action behind a button: its error, and whether it runs (the button is then disabled). */
export function useAction(): {
  busy: boolean;
  error: Problem | undefined;
  run: (action: () => Promise<unknown>) => Promise<boolean>;
  clear: () => void;
} {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Problem | undefined>(undefined);
  const run = useCallback(async (action: () => Promise<unknown>) => {
    setBusy(true);
    setError(undefined);
    try {
      await action();
      return true;
    } catch (e) {
      setError(problem(e));
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, clear: useCallback(() => setError(undefined), []) };
}

/** Token paging: the tokens of the pages seen so far make "Previous page" possible. */
export function usePages<T>(
  fetch: (pageToken: string) => Promise<{ items: T[]; next: string; total: number }>,
  deps: unknown[],
) {
  const [tokens, setTokens] = useState<string[]>([""]);
  useEffect(() => setTokens([""]), deps);
  const page = tokens.length - 1;
  const loaded = useLoad(() => fetch(tokens[page]!), [...deps, tokens]);
  return {
    ...loaded,
    page,
    next: () => loaded.value?.next && setTokens([...tokens, loaded.value.next]),
    previous: () => tokens.length > 1 && setTokens(tokens.slice(0, -1)),
  };
}
