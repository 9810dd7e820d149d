// Package docs holds the user documentation (events.md) and the JSON Schema
// of the canonical event (event.schema.json). It exports nothing: tests here
// keep the schema in step with history.Event, and other tests load the schema
// file by path.
package docs
