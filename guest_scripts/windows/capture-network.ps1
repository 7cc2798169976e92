# guestprep-script: capture-network
# guestprep-output: json
# Captures static IP configuration per MAC and installs a first-boot task that
# re-applies it to the adapter with the same MAC on the new hardware, then removes itself.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.network_capture'
Initialize-GuestprepDir
$adapters = @()
foreach ($cfg in @(Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = True')) {
    if (-not $cfg.MACAddress -or $cfg.DHCPEnabled) { continue }
    $nic = Get-CimInstance -ClassName Win32_NetworkAdapter -Filter ('Index = ' + [int]$cfg.Index)
    $adapters += [ordered]@{
        mac = [string]$cfg.MACAddress; name = [string]$nic.NetConnectionID; guid = [string]$nic.GUID
        ip = @($cfg.IPAddress); subnet = @($cfg.IPSubnet); gateways = @($cfg.DefaultIPGateway | Where-Object -FilterScript { $_ })
        dns = @($cfg.DNSServerSearchOrder | Where-Object -FilterScript { $_ }); dns_suffix = $cfg.DNSDomain
    }
}
$routes = @()
foreach ($rt in @(Get-CimInstance -ClassName Win32_IP4PersistedRouteTable)) {
    $routes += [ordered]@{ destination = [string]$rt.Destination; mask = [string]$rt.Mask; next_hop = [string]$rt.NextHop; metric = [int]$rt.Metric1 }
}
$capture = [ordered]@{ schema = 'guestprep.windows.network-capture/1'; hostname = $env:COMPUTERNAME; adapters = $adapters; routes = $routes }
$path = Join-Path -Path $GuestprepDir -ChildPath 'network-capture.json'
if (-not (Test-Path -Path $path)) { Add-JournalEntry -Operation $op -Kind 'file_write' -Target $path -Detail @{ before = $null } }
Write-JsonFile -Path $path -Value $capture
$restore = Join-Path -Path $GuestprepDir -ChildPath 'restore-network.ps1'
[System.IO.File]::WriteAllText($restore, [string]$p.restore_script, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
$task = [string]$p.task
$null = & schtasks.exe '/Query' '/TN' $task 2>$null
if ($LASTEXITCODE -ne 0) {
    Add-JournalEntry -Operation $op -Kind 'task_create' -Target $task -Detail @{ script = $restore }
    $null = & schtasks.exe '/Create' '/TN' $task '/SC' 'ONSTART' '/RU' 'SYSTEM' '/RL' 'HIGHEST' '/F' '/TR' ('powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "' + $restore + '"')
    if ($LASTEXITCODE -ne 0) { throw ('schtasks /Create exited ' + $LASTEXITCODE) }
}
$macs = @($adapters | ForEach-Object -Process { ([string]$_.mac).ToLower().Replace('-', ':') })
Update-GuestprepState -Key 'network_capture' -Value ([ordered]@{ macs = $macs; task = $task })
Write-Result -Value ([ordered]@{ ok = $true; capture = $capture; steps = @([ordered]@{ file = $path }, [ordered]@{ task = $task }) })
