module github.com/bulkfhir/bulkfhir

go 1.24

require (
	github.com/tidwall/gjson v1.18.0
	github.com/vbauerster/mpb/v8 v8.9.3
	go.etcd.io/bbolt v1.4.3
)

require (
	github.com/VividCortex/ewma v1.2.0 // indirect
	github.com/acarl005/stripansi v0.0.0-20180116102854-5a71ef0e047d // indirect
	github.com/mattn/go-runewidth v0.0.16 // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
)
