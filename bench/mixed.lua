-- wrk script: alternates a 2 KB X-Road SOAP request and a 1 KB JSON REST request, and prints JSON figures.
-- Paths and bodies come from the environment set by bench/exchange.py.
local soap_path = os.getenv("WASL_SOAP_PATH")
local rest_path = os.getenv("WASL_REST_PATH")
local client = os.getenv("WASL_REST_CLIENT")
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end
local soap_body = slurp(os.getenv("WASL_SOAP_FILE"))
local json_body = slurp(os.getenv("WASL_JSON_FILE"))
local soap_req, rest_req
local n = 0

-- Built on first use: wrk.format only knows the Host header once wrk has parsed the URL.
request = function()
  if not soap_req then
    soap_req = wrk.format("POST", soap_path, {["Content-Type"] = "text/xml; charset=utf-8"}, soap_body)
    rest_req = wrk.format("POST", rest_path,
      {["Content-Type"] = "application/json", ["X-Road-Client"] = client}, json_body)
  end
  n = n + 1
  if n % 2 == 0 then return soap_req end
  return rest_req
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WASL_RESULT {"rps": %f, "p50_ms": %f, "p99_ms": %f, "requests": %d, "errors": %d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
