package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tender-mesh/tender/inject"
)

// injectCmd prints the objects of a file with every pod, and every pod
// template of a workload, mutated as the injector would, for clusters
// without the webhook (kubectl apply -f <(tenderctl inject -f app.yaml)).
// Pods are injected whatever their namespace's label; a pod annotated
// tender.dev/inject: "false", on the host network, or already injected
// is left as it is. Other objects pass through.
func injectCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inject", stderr)
	file := fs.String("f", "", "file of Kubernetes objects (YAML or JSON, several separated by ---); - reads stdin")
	namespace := fs.String("namespace", "tender-system", "the control plane's namespace (the sidecars' default xDS address)")
	var sidecar inject.Flags
	sidecar.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || fs.NArg() > 0 {
		return usageErr("inject -f FILE")
	}
	cfg, err := sidecar.Config(*namespace)
	if err != nil {
		return usageErr("%v", err)
	}
	in := io.Reader(os.Stdin)
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	first := true
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: document %d: %w", *file, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		out, err := injectDoc(doc, cfg)
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", *file, i, err)
		}
		if !first {
			fmt.Fprintln(stdout, "---")
		}
		first = false
		if _, err := stdout.Write(out); err != nil {
			return err
		}
	}
}

// injectDoc injects the pod or the pod template of one object.
func injectDoc(doc []byte, cfg inject.Config) ([]byte, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		return nil, err
	}
	var obj any
	var tmpl *corev1.PodTemplateSpec
	switch head.Kind {
	case "Pod":
		pod := &corev1.Pod{}
		if err := strictJSON(j, pod); err != nil {
			return nil, err
		}
		out, err := injectPod(pod, cfg)
		if err != nil {
			return nil, err
		}
		obj = out
	case "Deployment":
		o := &appsv1.Deployment{}
		obj, tmpl = o, &o.Spec.Template
		err = strictJSON(j, o)
	case "StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, tmpl = o, &o.Spec.Template
		err = strictJSON(j, o)
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, tmpl = o, &o.Spec.Template
		err = strictJSON(j, o)
	case "ReplicaSet":
		o := &appsv1.ReplicaSet{}
		obj, tmpl = o, &o.Spec.Template
		err = strictJSON(j, o)
	case "Job":
		o := &batchv1.Job{}
		obj, tmpl = o, &o.Spec.Template
		err = strictJSON(j, o)
	case "CronJob":
		o := &batchv1.CronJob{}
		obj, tmpl = o, &o.Spec.JobTemplate.Spec.Template
		err = strictJSON(j, o)
	default:
		return doc, nil
	}
	if err != nil {
		return nil, err
	}
	if tmpl != nil {
		pod, err := injectPod(&corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}, cfg)
		if err != nil {
			return nil, err
		}
		tmpl.ObjectMeta, tmpl.Spec = pod.ObjectMeta, pod.Spec
	}
	return yaml.Marshal(obj)
}

func injectPod(pod *corev1.Pod, cfg inject.Config) (*corev1.Pod, error) {
	if d := inject.Decide(pod, map[string]string{inject.NamespaceLabel: "enabled"}); !d.Inject {
		return pod, nil
	}
	return inject.Inject(pod, cfg)
}

// strictJSON decodes j into v, refusing fields v does not have: a
// misspelt field would otherwise vanish from the output.
func strictJSON(j []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
