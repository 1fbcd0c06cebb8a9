package bulkclient

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// Reporter shows a person what the export is doing.
type Reporter interface {
	Logf(format string, args ...any)
	// Polling is called for each in-progress status reply.
	Polling(progress string)
	// Downloads announces the files; total resources is -1 when unknown.
	Downloads(files int, totalResources int64)
	FileStarted(name string, count *int64) FileProgress
	FileDone(name string, lines, bytes int64, skipped bool)
	// Finish ends the report once the run is over, with its error (nil on
	// success); it never blocks on anything unfinished.
	Finish(err error)
}

// FileProgress follows one download.
type FileProgress interface {
	Add(lines, bytes int64)
	Done(err error)
}

type nopReporter struct{}

func (nopReporter) Logf(string, ...any)                     {}
func (nopReporter) Polling(string)                          {}
func (nopReporter) Downloads(int, int64)                    {}
func (nopReporter) FileStarted(string, *int64) FileProgress { return nopFile{} }
func (nopReporter) FileDone(string, int64, int64, bool)     {}
func (nopReporter) Finish(error)                            {}

type nopFile struct{}

func (nopFile) Add(int64, int64) {}
func (nopFile) Done(error)       {}

// LineReporter writes plain timestamped lines: for logs and pipes.
type LineReporter struct {
	W    io.Writer
	mu   sync.Mutex
	last string
	at   time.Time
}

func (r *LineReporter) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.W, time.Now().Format("15:04:05")+" "+format+"\n", args...)
}

// Logf implements Reporter.
func (r *LineReporter) Logf(format string, args ...any) { r.printf(format, args...) }

// Polling implements Reporter; it prints a progress text when it changes
// (or every 30 s).
func (r *LineReporter) Polling(p string) {
	if p == "" {
		p = "in progress"
	}
	r.mu.Lock()
	changed := p != r.last || time.Since(r.at) > 30*time.Second
	if changed {
		r.last, r.at = p, time.Now()
	}
	r.mu.Unlock()
	if changed {
		r.printf("server: %s", p)
	}
}

// Downloads implements Reporter.
func (r *LineReporter) Downloads(files int, total int64) {
	if total >= 0 {
		r.printf("export complete: downloading %d files, %d resources", files, total)
		return
	}
	r.printf("export complete: downloading %d files", files)
}

// FileStarted implements Reporter.
func (r *LineReporter) FileStarted(string, *int64) FileProgress { return nopFile{} }

// FileDone implements Reporter.
func (r *LineReporter) FileDone(name string, lines, bytes int64, skipped bool) {
	if skipped {
		r.printf("kept %s (%d resources, already complete)", name, lines)
		return
	}
	r.printf("downloaded %s: %d resources, %s", name, lines, humanBytes(bytes))
}

// Finish implements Reporter.
func (r *LineReporter) Finish(error) {}

// BarReporter draws a live status line while the server works, then a bar
// per file (resources against the manifest's count, or bytes when there is
// none) and a total bar with rate and ETA.
//
// mpb renders from its own goroutine and calls decorators there, so no lock
// of the reporter is ever held while calling into mpb, and decorators read
// only atomics.
type BarReporter struct {
	W io.Writer

	once  sync.Once
	done  atomic.Bool // after Finish: plain lines, no more bars
	p     *mpb.Progress
	mu    sync.Mutex // guards poll and total
	poll  *mpb.Bar
	total *mpb.Bar
	text  atomic.Pointer[string]
	bytes atomic.Int64 // downloaded so far, shown on the total bar
}

func (r *BarReporter) progress() *mpb.Progress {
	r.once.Do(func() {
		r.p = mpb.New(mpb.WithOutput(r.W), mpb.WithWidth(32), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh())
	})
	return r.p
}

// Logf implements Reporter (printed above the bars).
func (r *BarReporter) Logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.done.Load() {
		fmt.Fprintln(r.W, msg)
		return
	}
	b, err := r.progress().Add(0, nil, mpb.BarFillerClearOnComplete(), mpb.PrependDecorators(decor.Name(msg)))
	if err != nil { // finished meanwhile
		fmt.Fprintln(r.W, msg)
		return
	}
	b.SetTotal(0, true)
}

// Polling implements Reporter.
func (r *BarReporter) Polling(p string) {
	if p == "" {
		p = "in progress"
	}
	p = "server: " + p
	r.text.Store(&p)
	r.mu.Lock()
	started := r.poll != nil
	r.mu.Unlock()
	if started {
		return
	}
	start := time.Now()
	bar := r.progress().New(0, mpb.SpinnerStyle(), mpb.BarFillerClearOnComplete(),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			return fmt.Sprintf("%s  (%s)", *r.text.Load(), time.Since(start).Round(time.Second))
		})))
	r.mu.Lock()
	r.poll = bar
	r.mu.Unlock()
}

// Downloads implements Reporter.
func (r *BarReporter) Downloads(files int, total int64) {
	done := "server: export complete"
	r.text.Store(&done)
	r.mu.Lock()
	poll := r.poll
	r.mu.Unlock()
	if poll != nil {
		poll.SetTotal(0, true)
	}
	if total < 0 {
		total = 0
	}
	bar := r.progress().AddBar(total,
		mpb.PrependDecorators(decor.Name(fmt.Sprintf("total (%d files)", files), decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.CountersNoUnit("%d / %d resources", decor.WCSyncSpace),
			decor.Any(func(decor.Statistics) string { return humanBytes(r.bytes.Load()) }, decor.WCSyncSpace),
			decor.AverageSpeed(nil, " %.0f/s", decor.WCSyncSpace),
			decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30, decor.WCSyncSpace), " done"),
		))
	r.mu.Lock()
	r.total = bar
	r.mu.Unlock()
}

func (r *BarReporter) totalBar() *mpb.Bar {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

type barFile struct {
	bar    *mpb.Bar
	total  *mpb.Bar
	bytes  *atomic.Int64
	byLine bool
	n      int64
}

func (f *barFile) Add(lines, bytes int64) {
	f.bytes.Add(bytes)
	if f.byLine {
		f.bar.IncrInt64(lines)
		f.n += lines
	} else {
		f.bar.IncrInt64(bytes)
		f.n += bytes
	}
	if f.total != nil {
		f.total.EwmaIncrInt64(lines, 200*time.Millisecond)
	}
}

func (f *barFile) Done(err error) {
	if err != nil {
		f.bar.Abort(false)
		return
	}
	f.bar.SetTotal(f.n, true)
}

// FileStarted implements Reporter.
func (r *BarReporter) FileStarted(name string, count *int64) FileProgress {
	f := &barFile{total: r.totalBar(), bytes: &r.bytes}
	if count != nil && *count > 0 {
		f.byLine = true
		f.bar = r.progress().AddBar(*count, mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersNoUnit("%d / %d", decor.WCSyncSpace),
				decor.AverageSpeed(nil, " %.0f/s", decor.WCSyncSpace)))
		return f
	}
	f.bar = r.progress().New(0, mpb.SpinnerStyle(), mpb.BarRemoveOnComplete(),
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Current(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
			decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WCSyncSpace)))
	return f
}

// FileDone implements Reporter.
func (r *BarReporter) FileDone(_ string, lines, bytes int64, skipped bool) {
	if t := r.totalBar(); skipped && t != nil {
		t.IncrInt64(lines)
		r.bytes.Add(bytes)
	}
}

// Finish implements Reporter. After a success every bar is complete and
// Wait flushes them. After a failure or an interrupt some bars never
// complete, and waiting for them was the hang on Ctrl-C: Shutdown stops the
// renderer at once instead.
func (r *BarReporter) Finish(err error) {
	if r.done.Swap(true) {
		return
	}
	p := r.progress()
	if err != nil {
		p.Shutdown()
		fmt.Fprintln(r.W)
		return
	}
	if t := r.totalBar(); t != nil {
		t.SetTotal(-1, true)
	}
	r.mu.Lock()
	poll := r.poll
	r.mu.Unlock()
	if poll != nil {
		poll.SetTotal(0, true)
	}
	p.Wait()
}
