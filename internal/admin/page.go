package admin

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
)

// page renders GET /: the /status snapshot as HTML for a person, read from
// the same JSON /status serves (so nothing is computed twice and nothing
// /status leaves out can appear), escaped by html/template, refreshed
// every 5 s by a meta tag; no script.
var page = template.Must(template.New("status").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>attache status</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.3em 0}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f0f0f0}
.ok{color:#070}.bad{color:#b00;font-weight:bold}.warn{color:#a60}
pre{margin:0;white-space:pre-wrap}
</style></head><body>
<h1>attache status</h1>
<p>{{if .ready}}<span class="ok">ready</span>{{else}}<span class="bad">not ready</span>{{end}}
{{if .draining}} <span class="bad">draining</span>{{end}}
{{with .config_file}}· config {{.}}{{end}}{{with .zone}} · zone {{.}}{{end}} · loaded {{.loaded_at}} · {{.active_connections}} open connections
· <a href="/status">/status</a> <a href="/metrics">/metrics</a> <a href="/config">/config</a></p>
{{with .not_ready}}<ul>{{range .}}<li class="bad">{{.}}</li>{{end}}</ul>{{end}}
{{with .notes}}<ul>{{range .}}<li class="warn">{{.}}</li>{{end}}</ul>{{end}}

<h2>Listeners</h2>
<table><tr><th>name</th><th>address</th><th>protocol</th><th>cluster</th><th>TLS</th><th>connections</th></tr>
{{range .listeners}}<tr><td>{{.name}}</td><td>{{.address}}</td><td>{{.protocol}}</td><td>{{.cluster}}</td><td>{{if .tls}}yes{{with .match_san}}, peers {{range $i, $n := .}}{{if $i}} {{end}}{{$n}}{{end}}{{end}}{{else}}no{{end}}</td><td>{{.active_connections}}</td></tr>
{{end}}</table>

{{range .listeners}}{{if .postgres_pools}}<h2>PostgreSQL pools of {{.name}}</h2>
<table><tr><th>database</th><th>user</th><th>cl_active</th><th>cl_waiting</th><th>sv_active</th><th>sv_idle</th><th>sv_open</th><th>maxwait (s)</th></tr>
{{range .postgres_pools}}<tr><td>{{.database}}</td><td>{{.user}}</td><td>{{.cl_active}}</td><td>{{.cl_waiting}}</td><td>{{.sv_active}}</td><td>{{.sv_idle}}</td><td>{{.sv_open}}</td><td>{{.maxwait_seconds}}</td></tr>
{{end}}</table>{{end}}{{end}}

<h2>Clusters</h2>
{{range .clusters}}<h3>{{.name}}</h3>
<p>balance {{.balance}}{{with .circuit_breaker}} · breaker <span class="{{if eq . "closed"}}ok{{else}}bad{{end}}">{{.}}</span>{{end}}
{{with .discovery}} · discovery {{.source}}{{if .stale}} <span class="warn">stale{{with .error}}: {{.}}{{end}}</span>{{end}}{{end}}
{{with .match_san}} · TLS peers {{range $i, $n := .}}{{if $i}} {{end}}{{$n}}{{end}}{{end}}
{{with .zone_aware}} · zone routing <span class="{{if .spill_over}}warn{{else}}ok{{end}}">{{.mode}}{{if eq .mode "split"}} (local share {{.local_share}}){{end}}{{if .hints}} by hints{{end}}</span>{{with .reason}} ({{.}}){{end}}{{end}}</p>
<table><tr><th>endpoint</th><th>weight</th><th>health</th><th>role</th><th>lag (s)</th><th>connections</th><th>latency (s)</th><th>zone</th></tr>
{{range .endpoints}}<tr><td>{{.address}}</td><td>{{.weight}}</td><td class="{{if or (eq .state "ejected") (eq .state "unhealthy")}}bad{{else}}ok{{end}}">{{.state}}</td><td>{{with .role}}{{.}}{{end}}</td><td>{{with .replication_lag_seconds}}{{.}}{{end}}</td><td>{{.active_connections}}</td><td>{{with .latency_estimate_seconds}}{{.}}{{end}}</td><td>{{.zone}}{{with .hints}} (hints {{.}}){{end}}</td></tr>
{{end}}</table>
{{with .redis_shards}}<table><tr><th>shard</th><th>address</th><th>connections</th><th>ejected</th></tr>
{{range .}}<tr><td>{{.name}}</td><td>{{.address}}</td><td>{{.connections}}</td><td>{{if .ejected}}<span class="bad">ejected</span>{{else}}no{{end}}</td></tr>
{{end}}</table>{{end}}
{{end}}

{{with .certificates}}<h2>Certificates</h2>
<table><tr><th>owner</th><th>file</th><th>not after</th></tr>
{{range .}}<tr><td>{{.owner}}</td><td>{{.file}}</td><td>{{.not_after}}</td></tr>
{{end}}</table>{{end}}

<h2>Reloads</h2>
{{with .reloads}}<table><tr><th>at</th><th>result</th></tr>
{{range .}}<tr><td>{{.at}}</td><td>{{if .ok}}<span class="ok">ok</span>{{else}}<pre class="bad">failed: {{.error}}</pre>{{end}}</td></tr>
{{end}}</table>{{else}}<p>none since start</p>{{end}}
</body></html>
`))

// servePage writes the status page of src.
func servePage(w http.ResponseWriter, src Source) {
	raw, err := json.Marshal(src.Status())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var snap map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&snap); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var b bytes.Buffer
	if err := page.Execute(&b, snap); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b.Bytes())
}
