import { render } from "preact";

import { createApi } from "./api.js";
import { App } from "./App.js";
import { ApiContext } from "./context.js";
import "./styles.css";

render(
  <ApiContext.Provider value={createApi()}>
    <App />
  </ApiContext.Provider>,
  document.getElementById("app")!,
);
