package functions_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
)

// dynamoProxy sits in front of DynamoDB Local: it measures every item a
// PutItem or a TransactWriteItems Put sends against the 400 KB item limit,
// refuses one over it as DynamoDB does, and forwards the rest.
type dynamoProxy struct {
	cl    *cluster
	proxy *httputil.ReverseProxy
}

func newDynamoProxy(cl *cluster, target string) (*dynamoProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	return &dynamoProxy{cl: cl, proxy: httputil.NewSingleHostReverseProxy(u)}, nil
}

func (p *dynamoProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var items []map[string]any
	switch strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.") {
	case "PutItem":
		var in struct{ Item map[string]any }
		json.Unmarshal(body, &in)
		items = append(items, in.Item)
	case "TransactWriteItems":
		var in struct {
			TransactItems []struct {
				Put *struct{ Item map[string]any }
			}
		}
		json.Unmarshal(body, &in)
		for _, ti := range in.TransactItems {
			if ti.Put != nil {
				items = append(items, ti.Put.Item)
			}
		}
	}
	for _, it := range items {
		n := wireItemSize(it)
		p.cl.mu.Lock()
		p.cl.limits.MaxItemBytes = max(p.cl.limits.MaxItemBytes, n)
		p.cl.mu.Unlock()
		if n > dynamostore.MaxItemBytes {
			p.cl.crossed(fmt.Sprintf("a DynamoDB item of %d bytes is over the %d-byte limit", n, dynamostore.MaxItemBytes))
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"Item size has exceeded the maximum allowed size"}`)
			return
		}
	}
	p.proxy.ServeHTTP(w, r)
}

// wireItemSize is dynamostore.ItemSize for an item in DynamoDB's JSON
// wire format.
func wireItemSize(it map[string]any) int {
	n := 0
	for k, v := range it {
		n += len(k) + wireValueSize(v)
	}
	return n
}

func wireValueSize(v any) int {
	av, _ := v.(map[string]any)
	for typ, x := range av {
		switch typ {
		case "S":
			s, _ := x.(string)
			return len(s)
		case "N":
			s, _ := x.(string)
			return (len(strings.TrimLeft(s, "-0"))+1)/2 + 1
		case "B":
			s, _ := x.(string)
			b, _ := base64.StdEncoding.DecodeString(s)
			return len(b)
		case "BOOL", "NULL":
			return 1
		case "SS":
			n := 0
			for _, e := range x.([]any) {
				s, _ := e.(string)
				n += len(s)
			}
			return n
		case "M":
			n := 3
			for k, e := range x.(map[string]any) {
				n += len(k) + wireValueSize(e) + 1
			}
			return n
		case "L":
			n := 3
			for _, e := range x.([]any) {
				n += wireValueSize(e) + 1
			}
			return n
		}
	}
	return 0
}
