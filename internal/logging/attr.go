package logging

import (
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"time"
)

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that keeps log values in
// one plain form for text and JSON alike: a time.Duration is written in
// seconds (delay=0.019, never nanoseconds), and a map is written as sorted
// "key=value" words (listeners="qmqp=127.0.0.1:2628 smtp=127.0.0.1:2525",
// never a Go map dump).
func ReplaceAttr(groups []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	case slog.KindAny:
		v := reflect.ValueOf(a.Value.Any())
		if v.Kind() == reflect.Map {
			return slog.String(a.Key, mapWords(v))
		}
	}
	return a
}

// mapWords writes a map as "k=v k=v" with the keys sorted; a slice value
// becomes its elements joined by commas.
func mapWords(m reflect.Value) string {
	parts := make([]string, 0, m.Len())
	for it := m.MapRange(); it.Next(); {
		parts = append(parts, fmt.Sprint(it.Key().Interface())+"="+valueWord(it.Value()))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func valueWord(v reflect.Value) string {
	if v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() == reflect.Slice || v.Kind() == reflect.Array {
		el := make([]string, v.Len())
		for i := range el {
			el[i] = valueWord(v.Index(i))
		}
		return strings.Join(el, ",")
	}
	if d, ok := v.Interface().(time.Duration); ok {
		return fmt.Sprint(d.Seconds())
	}
	return fmt.Sprint(v.Interface())
}
