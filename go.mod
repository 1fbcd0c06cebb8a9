module github.com/bulkfhir/bulkfhir

go 1.24

require (
	github.com/tidwall/gjson v1.18.0
	go.etcd.io/bbolt v1.4.3
)

require (
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	golang.org/x/sys v0.29.0 // indirect
)
