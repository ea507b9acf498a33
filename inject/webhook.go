package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultMaxReviewBytes bounds an AdmissionReview unless the Webhook
// says otherwise: the API server takes no write request over 3 MiB
// (--max-request-body-bytes), so no pod it would admit is larger.
const DefaultMaxReviewBytes = 3 << 20

// Webhook is the mutating admission webhook that meshes pods: served on
// the control plane's :15017 at /inject.
type Webhook struct {
	Config Config
	// NamespaceLabels returns a namespace's labels (from an informer's
	// cache in the control plane).
	NamespaceLabels func(ctx context.Context, namespace string) (map[string]string, error)
	// Observe, if set, is told of every decision: "injected", "skipped"
	// or "refused" (an annotation it could not apply, or a broken review).
	Observe func(result string)
	Logger  *slog.Logger
	// MaxReviewBytes bounds the request body; 0: DefaultMaxReviewBytes.
	MaxReviewBytes int64
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

func (wh *Webhook) observe(result string) {
	if wh.Observe != nil {
		wh.Observe(result)
	}
}

func (wh *Webhook) logger() *slog.Logger {
	if wh.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return wh.Logger
}

// ServeHTTP answers an admission.k8s.io/v1 AdmissionReview.
func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "want Content-Type application/json", http.StatusUnsupportedMediaType)
		return
	}
	limit := wh.MaxReviewBytes
	if limit <= 0 {
		limit = DefaultMaxReviewBytes
	}
	if r.ContentLength > limit {
		wh.observe("refused")
		http.Error(w, fmt.Sprintf("the review is over %d bytes", limit), http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		wh.observe("refused")
		http.Error(w, "reading the review: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		wh.observe("refused")
		http.Error(w, fmt.Sprintf("not an AdmissionReview with a request: %v", err), http.StatusBadRequest)
		return
	}
	resp := wh.review(r.Context(), review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		wh.logger().Debug("writing the admission response", "err", err)
	}
}

func (wh *Webhook) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Kind.Group != "" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return allow // the webhook configuration should not send these
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		wh.observe("refused")
		return deny(http.StatusBadRequest, fmt.Sprintf("tender injector: the pod does not decode: %v", err))
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	var nsLabels map[string]string
	if wh.NamespaceLabels != nil {
		labels, err := wh.NamespaceLabels(ctx, ns)
		if err != nil {
			// Without the namespace, only the pod's own annotation can
			// decide; say so rather than guess.
			wh.logger().Warn("namespace labels unknown; deciding on the pod alone", "namespace", ns, "err", err)
		}
		nsLabels = labels
	}
	d := Decide(&pod, nsLabels)
	log := wh.logger().With("pod", ns+"/"+name)
	if !d.Inject {
		wh.observe("skipped")
		log.Debug("not injected", "reason", d.Reason)
		return allow
	}
	injected, err := Inject(&pod, wh.Config)
	if err != nil {
		wh.observe("refused")
		log.Warn("injection refused", "err", err)
		return deny(http.StatusUnprocessableEntity, "tender injector: "+err.Error())
	}
	patch, err := json.Marshal(diffPod(&pod, injected))
	if err != nil {
		wh.observe("refused")
		return deny(http.StatusInternalServerError, "tender injector: "+err.Error())
	}
	wh.observe("injected")
	log.Info("injected", "reason", d.Reason, "native_sidecar", len(injected.Spec.InitContainers) > len(pod.Spec.InitContainers)+1)
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt, Patch: patch}
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg, Reason: metav1.StatusReasonInvalid,
	}}
}

// diffPod writes the fields Inject changes as whole-value "add"
// operations ("add" replaces a member that exists).
func diffPod(before, after *corev1.Pod) []patchOp {
	var ops []patchOp
	if !reflect.DeepEqual(before.Spec.InitContainers, after.Spec.InitContainers) {
		ops = append(ops, patchOp{"add", "/spec/initContainers", after.Spec.InitContainers})
	}
	if !reflect.DeepEqual(before.Spec.Containers, after.Spec.Containers) {
		ops = append(ops, patchOp{"add", "/spec/containers", after.Spec.Containers})
	}
	if !reflect.DeepEqual(before.Spec.Volumes, after.Spec.Volumes) {
		ops = append(ops, patchOp{"add", "/spec/volumes", after.Spec.Volumes})
	}
	if !reflect.DeepEqual(before.Spec.TerminationGracePeriodSeconds, after.Spec.TerminationGracePeriodSeconds) {
		ops = append(ops, patchOp{"add", "/spec/terminationGracePeriodSeconds", after.Spec.TerminationGracePeriodSeconds})
	}
	if !reflect.DeepEqual(before.Annotations, after.Annotations) {
		ops = append(ops, patchOp{"add", "/metadata/annotations", after.Annotations})
	}
	return ops
}
