package functions_test

// The Distributed Map, played by the fake Step Functions endpoint, since
// aws-local-stepfunctions has none: the parent execution runs with each
// DISTRIBUTED Map state replaced by a Task the fake Lambda endpoint answers;
// that task reads the items the way ItemReader does (the JSON array object
// in S3 the ItemReader's Parameters name), applies the ItemSelector, runs
// the committed ItemProcessor as one child execution per item (at most
// MaxConcurrency at a time, in one long-lived runner process), fails when
// more children fail than ToleratedFailurePercentage allows
// (States.ExceedToleratedFailureThreshold), and writes a ResultWriter
// manifest. Each child is an execution of its own for the limits: its
// history and state sizes are counted and enforced by the runner.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Step Functions limits the harness enforces (see run-local.mjs for the
// state size and history checks, done where the states run).
const (
	maxStateBytes     = 256 * 1024
	maxHistoryEvents  = 25000
	maxLambdaResponse = 6 * 1024 * 1024
)

// outcome is how an execution ended, as run-local.mjs reports it.
type outcome struct {
	ID            int             `json:"id"`
	OK            bool            `json:"ok"`
	Output        json.RawMessage `json:"output"`
	Error         string          `json:"error"`
	Cause         string          `json:"cause"`
	Events        int             `json:"events"`
	Transitions   int             `json:"transitions"`
	MaxStateBytes int             `json:"maxStateBytes"`
	Limit         string          `json:"limit"`
}

// mapError is a failed Map, by its Step Functions error name.
type mapError struct{ Name, Cause string }

func (e *mapError) Error() string { return e.Name + ": " + e.Cause }

// distributedMap is one DISTRIBUTED Map state of a definition.
type distributedMap struct {
	ItemReader struct {
		Resource     string         `json:"Resource"`
		ReaderConfig map[string]any `json:"ReaderConfig"`
		Parameters   map[string]any `json:"Parameters"`
	} `json:"ItemReader"`
	ItemSelector               map[string]any  `json:"ItemSelector"`
	MaxConcurrency             int             `json:"MaxConcurrency"`
	ToleratedFailurePercentage float64         `json:"ToleratedFailurePercentage"`
	ItemProcessor              json.RawMessage `json:"ItemProcessor"`
	ResultWriter               *struct {
		Resource   string         `json:"Resource"`
		Parameters map[string]any `json:"Parameters"`
	} `json:"ResultWriter"`
}

// splitDistributed returns the definition with every DISTRIBUTED Map state
// replaced by a Task on taskArn+<state name>, and those Map states.
func splitDistributed(def []byte, taskArn string) ([]byte, map[string]*distributedMap, error) {
	var sm map[string]any
	if err := json.Unmarshal(def, &sm); err != nil {
		return nil, nil, err
	}
	states, _ := sm["States"].(map[string]any)
	maps := map[string]*distributedMap{}
	for name, raw := range states {
		st, _ := raw.(map[string]any)
		proc, _ := st["ItemProcessor"].(map[string]any)
		cfg, _ := proc["ProcessorConfig"].(map[string]any)
		if st["Type"] != "Map" || cfg["Mode"] != "DISTRIBUTED" {
			continue
		}
		// The child executions run the ItemProcessor as a state machine
		// of its own, without the Map's ProcessorConfig.
		child := map[string]any{}
		for k, v := range proc {
			if k != "ProcessorConfig" {
				child[k] = v
			}
		}
		st["ItemProcessor"] = child
		b, _ := json.Marshal(st)
		m := &distributedMap{}
		if err := json.Unmarshal(b, m); err != nil {
			return nil, nil, fmt.Errorf("state %s: %w", name, err)
		}
		if m.ItemReader.Resource != "arn:aws:states:::s3:getObject" || m.ItemReader.ReaderConfig["InputType"] != "JSON" {
			return nil, nil, fmt.Errorf("state %s: only a JSON ItemReader on s3:getObject is played", name)
		}
		// A Task has no timeout on AWS unless it sets one; the runner's
		// default is a minute (and Node's timers overflow past 24 days).
		task := map[string]any{"Type": "Task", "Resource": taskArn + name, "TimeoutSeconds": 2000000}
		for _, k := range []string{"ResultPath", "Retry", "Catch", "Next", "End", "Comment"} {
			if v, ok := st[k]; ok {
				task[k] = v
			}
		}
		states[name] = task
		maps[name] = m
	}
	out, err := json.Marshal(sm)
	return out, maps, err
}

// lookup resolves a JSONPath of the form $ or $.a.b in doc.
func lookup(doc any, path string) (any, error) {
	if path == "$" {
		return doc, nil
	}
	rest, ok := strings.CutPrefix(path, "$.")
	if !ok {
		return nil, fmt.Errorf("unsupported path %q", path)
	}
	cur := doc
	for _, part := range strings.Split(rest, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("path %q: %s is not in an object", path, part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("path %q: no field %s", path, part)
		}
	}
	return cur, nil
}

// parameters evaluates a Parameters/ItemSelector object: "k.$" fields are
// paths into input ("$…") or the context ("$$.Map.Item.Value|Index").
func parameters(tmpl map[string]any, input any, item any, index int) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range tmpl {
		name, isPath := strings.CutSuffix(k, ".$")
		if !isPath {
			out[k] = v
			continue
		}
		p, _ := v.(string)
		switch {
		case p == "$$.Map.Item.Value":
			out[name] = item
		case p == "$$.Map.Item.Index":
			out[name] = index
		default:
			val, err := lookup(input, p)
			if err != nil {
				return nil, err
			}
			out[name] = val
		}
	}
	return out, nil
}

// mapIO is what a played Map reads, writes and runs.
type mapIO struct {
	read  func(ctx context.Context, bucket, key string) ([]byte, error)
	write func(ctx context.Context, bucket, key string, body []byte) error
	child func(ctx context.Context, def json.RawMessage, input []byte) (outcome, error)
}

// run plays the Map on its input and returns its result (before
// ResultPath).
func (m *distributedMap) run(ctx context.Context, runID string, rawInput []byte, io mapIO) ([]byte, error) {
	var input any
	if err := json.Unmarshal(rawInput, &input); err != nil {
		return nil, err
	}
	params, err := parameters(m.ItemReader.Parameters, input, nil, 0)
	if err != nil {
		return nil, &mapError{"States.ItemReaderFailed", err.Error()}
	}
	bucket, _ := params["Bucket"].(string)
	key, _ := params["Key"].(string)
	body, err := io.read(ctx, bucket, key)
	if err != nil {
		return nil, &mapError{"States.ItemReaderFailed", fmt.Sprintf("read s3://%s/%s: %v", bucket, key, err)}
	}
	var items []any
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, &mapError{"States.ItemReaderFailed", fmt.Sprintf("s3://%s/%s is not a JSON array: %v", bucket, key, err)}
	}
	limit := m.MaxConcurrency
	if limit <= 0 || limit > 10000 {
		limit = 10000 // the Distributed Map's ceiling
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, limit)
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		failed   int
		first    *outcome
		outputs  = make([]json.RawMessage, len(items))
		runErr   error
		tolerate = int(m.ToleratedFailurePercentage * float64(len(items)) / 100)
	)
	for i, item := range items {
		in := any(item)
		if m.ItemSelector != nil {
			sel, err := parameters(m.ItemSelector, input, item, i)
			if err != nil {
				cancel()
				wg.Wait()
				return nil, &mapError{"States.Runtime", err.Error()}
			}
			in = sel
		}
		childIn, _ := json.Marshal(in)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int, childIn []byte) {
			defer wg.Done()
			defer func() { <-sem }()
			o, err := io.child(ctx, m.ItemProcessor, childIn)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && failed > tolerate:
				// aborted after the Map had failed
			case err != nil:
				if runErr == nil {
					runErr = err
				}
				cancel()
			case !o.OK:
				failed++
				if first == nil {
					first = &o
				}
				if failed > tolerate {
					cancel()
				}
			default:
				outputs[i] = o.Output
			}
		}(i, childIn)
	}
	wg.Wait()
	if runErr != nil {
		return nil, runErr
	}
	if failed > tolerate {
		return nil, &mapError{"States.ExceedToleratedFailureThreshold",
			fmt.Sprintf("%d of %d child executions failed; the first: %s: %s", failed, len(items), first.Error, first.Cause)}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.ResultWriter == nil {
		out, _ := json.Marshal(outputs)
		return out, nil
	}
	wp, err := parameters(m.ResultWriter.Parameters, input, nil, 0)
	if err != nil {
		return nil, &mapError{"States.ResultWriterFailed", err.Error()}
	}
	wb, _ := wp["Bucket"].(string)
	wk := strings.TrimSuffix(fmt.Sprint(wp["Prefix"]), "/") + "/" + runID + "/manifest.json"
	manifest, _ := json.Marshal(map[string]any{"DestinationBucket": wb, "MapRunArn": runID,
		"ResultFiles": map[string]any{"SUCCEEDED": []any{}, "FAILED": []any{}}, "Items": len(items)})
	if err := io.write(ctx, wb, wk, manifest); err != nil {
		return nil, &mapError{"States.ResultWriterFailed", err.Error()}
	}
	out, _ := json.Marshal(map[string]any{"MapRunArn": runID, "ResultWriterDetails": map[string]string{"Bucket": wb, "Key": wk}})
	return out, nil
}

// worker is one long-lived run-local.mjs --serve process that runs child
// executions concurrently.
type worker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	next  int
	wait  map[int]chan outcome
	dead  error
}

func startWorker(root string) (*worker, error) {
	cmd := exec.Command("node", filepath.Join(root, "infra", "statemachine", "run-local.mjs"), "--serve")
	cmd.Env = append(os.Environ(), "BULKFHIR_RETRY_MS=0", "NODE_NO_WARNINGS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &worker{cmd: cmd, stdin: stdin, wait: map[int]chan outcome{}}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var o outcome
			if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
				continue
			}
			w.mu.Lock()
			ch := w.wait[o.ID]
			delete(w.wait, o.ID)
			w.mu.Unlock()
			if ch != nil {
				ch <- o
			}
		}
		w.mu.Lock()
		w.dead = fmt.Errorf("the state machine runner exited: %v", sc.Err())
		for id, ch := range w.wait {
			close(ch)
			delete(w.wait, id)
		}
		w.mu.Unlock()
	}()
	return w, nil
}

// run executes one definition with input and waits for its outcome; if
// ctx ends first the execution is aborted.
func (w *worker) run(ctx context.Context, def json.RawMessage, input []byte) (outcome, error) {
	w.mu.Lock()
	if w.dead != nil {
		w.mu.Unlock()
		return outcome{}, w.dead
	}
	w.next++
	id := w.next
	ch := make(chan outcome, 1)
	w.wait[id] = ch
	line, _ := json.Marshal(map[string]any{"id": id, "definition": def, "input": json.RawMessage(input)})
	_, err := w.stdin.Write(append(line, '\n'))
	w.mu.Unlock()
	if err != nil {
		return outcome{}, err
	}
	select {
	case o, ok := <-ch:
		if !ok {
			return outcome{}, fmt.Errorf("the state machine runner exited")
		}
		return o, nil
	case <-ctx.Done():
		w.mu.Lock()
		abort, _ := json.Marshal(map[string]int{"abort": id})
		w.stdin.Write(append(abort, '\n'))
		w.mu.Unlock()
		return outcome{}, ctx.Err()
	}
}

func (w *worker) close() {
	w.stdin.Close()
	if w.cmd.Process != nil {
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	}
	w.cmd.Wait()
}
