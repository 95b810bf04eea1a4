module github.com/attache-proxy/attache

go 1.26.8

require gopkg.in/yaml.v3 v3.0.1

require (
	github.com/fsnotify/fsnotify v1.10.1 // indirect
	golang.org/x/sys v0.13.0 // indirect
)
