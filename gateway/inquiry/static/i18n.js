"use strict";
// The dashboard's words in English and Arabic; app.js picks one and sets the page's direction.
window.WASL_I18N = {
  en: {
    title: "Federation control room", range: "Range", search: "Find a transaction",
    searchHint: "X-Road id or trace id", searchButton: "Search", transactions: "Transactions",
    errorRate: "Error rate", volume: "Volume and errors", latency: "Latency percentiles (ms)",
    matrix: "Agency-to-agency traffic", matrixHint: "Rows call columns; click a cell to list its transactions.",
    gateways: "Gateway health", slowest: "Slowest services", failing: "Most failing services",
    recent: "Recent transactions", footer: "Live from every gateway's operational records, joined by X-Road id.",
    updated: "Updated", calls: "calls", failed: "failed", errors: "errors", service: "Service",
    provider: "Provider", client: "Client", count: "Count", status: "Status", time: "Time", duration: "Duration",
    fault: "Fault", gateway: "Gateway", confAge: "Configuration age", confExpires: "Configuration expires",
    authCert: "Auth certificate", signCert: "Sign certificate", timestamping: "Timestamping",
    opmon: "Monitoring queue", ok: "ok", days: "d", seconds: "s", none: "None in this range.",
    notFound: "No transaction with this id in any gateway that answered.", searching: "Searching…",
    incomplete: "Not every gateway answered: ", answered: "gateways answered",
    timeline: "Timeline", breakdown: "Where the time went", clientSide: "Client side", providerSide: "Provider side",
    client_gateway: "Client's gateway", network: "Network between gateways", provider_gateway: "Provider's gateway",
    backend: "Backend service", missing: "Missing side: ", traceId: "Trace id", requestId: "Request id",
    user: "User", size: "Sizes (request / response)", all: "all", showAll: "show all",
    request_in: "request in", request_out: "request out", response_in: "response in", response_out: "response out",
    sideclient: "client", sideprovider: "provider", expired: "expired", unavailable: "no answer",
    lang: "عربي"
  },
  ar: {
    title: "غرفة التحكم بالاتحاد", range: "المدى", search: "البحث عن معاملة",
    searchHint: "معرّف X-Road أو معرّف التتبع", searchButton: "بحث", transactions: "المعاملات",
    errorRate: "نسبة الأخطاء", volume: "الحجم والأخطاء", latency: "مئينات زمن الاستجابة (مللي ثانية)",
    matrix: "الحركة بين الجهات", matrixHint: "الصفوف تستدعي الأعمدة؛ انقر خلية لعرض معاملاتها.",
    gateways: "حالة البوابات", slowest: "أبطأ الخدمات", failing: "أكثر الخدمات إخفاقًا",
    recent: "أحدث المعاملات", footer: "مباشرة من السجلات التشغيلية لكل بوابة، مربوطة بمعرّف X-Road.",
    updated: "آخر تحديث", calls: "طلب", failed: "فاشلة", errors: "أخطاء", service: "الخدمة",
    provider: "الجهة المزوّدة", client: "الجهة الطالبة", count: "العدد", status: "الحالة", time: "الوقت",
    duration: "المدة", fault: "الخطأ", gateway: "البوابة", confAge: "عمر الإعدادات",
    confExpires: "انتهاء الإعدادات", authCert: "شهادة المصادقة", signCert: "شهادة التوقيع",
    timestamping: "الختم الزمني", opmon: "طابور المراقبة", ok: "سليم", days: "يوم", seconds: "ث",
    none: "لا شيء في هذا المدى.", notFound: "لا توجد معاملة بهذا المعرّف في البوابات التي أجابت.",
    searching: "جارٍ البحث…", incomplete: "لم تُجب كل البوابات: ", answered: "بوابات أجابت",
    timeline: "التسلسل الزمني", breakdown: "أين ذهب الوقت", clientSide: "جهة الطلب", providerSide: "جهة التزويد",
    client_gateway: "بوابة الجهة الطالبة", network: "الشبكة بين البوابتين", provider_gateway: "بوابة الجهة المزوّدة",
    backend: "خدمة الجهة المزوّدة", missing: "جانب مفقود: ", traceId: "معرّف التتبع", requestId: "معرّف الطلب",
    user: "المستخدم", size: "الأحجام (طلب / رد)", all: "الكل", showAll: "عرض الكل",
    request_in: "وصول الطلب", request_out: "إرسال الطلب", response_in: "وصول الرد", response_out: "إرسال الرد",
    sideclient: "الطالبة", sideprovider: "المزوّدة", expired: "منتهية", unavailable: "لا إجابة",
    lang: "English"
  }
};
